"""The conformance suite every DOPE model kind passes, built in or plugin (``dope models check KIND``).

Each ``check_*`` function asserts one promise of the :class:`dope.models.Model` protocol and raises
:class:`CheckFailed` (an ``AssertionError``) saying what broke; :func:`run_suite` runs them all on one
kind and returns a :class:`Report`, which also times ``predict_one`` against the latency budgets and
runs the online/offline parity test on every registered feature (:mod:`dope.features.parity`).
"""

from __future__ import annotations

import gc
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from dope.models.base import Model, load_model, make_model
from dope.types import FloatArray

Factory = Callable[[], Model]
ONE_EQUALS_MANY_TOLERANCE: Final = 1e-12
P50_BUDGET_S: Final = 100e-6
P99_BUDGET_S: Final = 2e-3
CHECK_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "random_forest": {"n_estimators": 10, "max_depth": 5, "min_samples_leaf": 5, "n_jobs": 1},
    "lightgbm": {"n_estimators": 25, "num_leaves": 7, "min_child_samples": 10, "num_threads": 1},
    "lstm": {"lookback": 5, "units": 4, "epochs": 1, "batch_size": 64},
    "momentum": {"column": 0},
    "ridge": {"alpha": 0.5},
}
"""Small parameters for the built-in kinds, so that checking one takes seconds (``--params`` adds to them)."""


class CheckFailed(AssertionError):
    """A model broke a promise of the protocol; the message says which and where."""


def sample_data(n: int = 400, n_features: int = 6, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    """Features with memory (AR(1)) and a target that depends on them, plus noise."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, n_features))
    X[0] = rng.standard_normal(n_features)
    for i in range(1, n):
        X[i] = 0.7 * X[i - 1] + rng.standard_normal(n_features)
    y = 0.5 * X[:, 0] - 0.3 * np.tanh(X[:, 1] * X[:, 2]) + 0.5 * rng.standard_normal(n)
    return X, y


def _arrays_equal(got: FloatArray, expected: FloatArray, what: str) -> None:
    if got.shape != expected.shape:
        raise CheckFailed(f"{what} (shapes {got.shape} != {expected.shape})")
    differ = np.flatnonzero(~((got == expected) | (np.isnan(got) & np.isnan(expected))))
    if len(differ):
        row = int(differ[0])
        raise CheckFailed(f"{what} (first at row {row}: {got[row]!r} != {expected[row]!r})")


def fit_without_mutation(factory: Factory, X: FloatArray, y: FloatArray) -> Model:
    """A fitted model; fit, predict_many and predict_one leave their inputs as they were."""
    X_before, y_before = X.copy(), y.copy()
    model = factory().fit(X, y)
    model.predict_many(X)
    model.predict_one(X[-model.lookback:])
    if not (np.array_equal(X, X_before) and np.array_equal(y, y_before)):
        raise CheckFailed("fit or predict changed the caller's X or y")
    return model


def check_reproducible(model: Model, factory: Factory, X: FloatArray, y: FloatArray) -> None:
    """A second fit of the same seeded model on the same data predicts the same, bit for bit."""
    _arrays_equal(factory().fit(X, y).predict_many(X), model.predict_many(X), "a second fit predicts differently")


def check_round_trip(model: Model, X: FloatArray, directory: Path) -> None:
    """save then load_model gives the same kind, metadata and predictions (one and many)."""
    model.save(directory)
    loaded = load_model(directory)
    if type(loaded) is not type(model) or loaded.kind != model.kind:
        raise CheckFailed(f"load_model gave a {type(loaded).__name__} of kind {loaded.kind!r}")
    if loaded.metadata() != model.metadata():
        raise CheckFailed(f"metadata changed by save/load: {loaded.metadata()} != {model.metadata()}")
    _arrays_equal(loaded.predict_many(X), model.predict_many(X), "the loaded model predicts differently")
    window = X[-model.lookback:]
    if loaded.predict_one(window) != model.predict_one(window):
        raise CheckFailed("the loaded model's predict_one differs")


def check_one_equals_many(model: Model, X: FloatArray, cuts: int = 7) -> None:
    """predict_one on the window ending at row i equals predict_many's value for row i (to 1e-12)."""
    many = model.predict_many(X)
    lookback = model.lookback
    if not np.isnan(many[: lookback - 1]).all():
        raise CheckFailed(f"predict_many gave values for the first lookback - 1 = {lookback - 1} rows")
    for i in np.linspace(lookback - 1, len(X) - 1, cuts).astype(int):
        one = model.predict_one(X[i - lookback + 1: i + 1])
        if not abs(one - many[i]) <= ONE_EQUALS_MANY_TOLERANCE:
            raise CheckFailed(f"row {i}: predict_one {one!r} != predict_many {many[i]!r}")


def check_no_look_ahead(model: Model, X: FloatArray, cuts: int = 6) -> None:
    """Truncating X at any point leaves every earlier prediction unchanged."""
    full = model.predict_many(X)
    for cut in np.linspace(model.lookback, len(X) - 1, cuts).astype(int):
        _arrays_equal(model.predict_many(X[:cut]), full[:cut],
                      f"look-ahead: cutting the data at row {cut} changed earlier predictions")


def check_finite(model: Model, X: FloatArray) -> None:
    """Every prediction after the first lookback - 1 rows is a finite float."""
    many = model.predict_many(X)
    if many.shape != (len(X),) or many.dtype != np.float64:
        raise CheckFailed(f"predict_many gave {many.dtype} {many.shape}, not float64 ({len(X)},)")
    if not np.isfinite(many[model.lookback - 1:]).all():
        raise CheckFailed("predict_many gave NaN or inf after the first lookback - 1 rows")
    if not isinstance(model.predict_one(X[-model.lookback:]), float):
        raise CheckFailed("predict_one did not return a float")


def check_model(factory: Factory, X: FloatArray, y: FloatArray, directory: Path) -> None:
    """Every model check, raising on the first failure (two fits in all, so slow learners stay cheap)."""
    model = fit_without_mutation(factory, X, y)
    check_reproducible(model, factory, X, y)
    check_round_trip(model, X, directory)
    check_one_equals_many(model, X)
    check_no_look_ahead(model, X)
    check_finite(model, X)


def _registered(model: Model, root: Path) -> tuple[Any, str, str]:
    from dope.features import default_feature_set
    from dope.models.registry import Registry

    registry = Registry(root)
    fs = default_feature_set(10_000, plugins=())
    model_id = registry.register(model, feature_set=fs, symbol="CHECK", interval_ms=10_000,
                                 train_start_ms=0, train_end_ms=10_000)
    return registry, model_id, fs.version


def check_corrupt_refused(model: Model, root: Path) -> None:
    """The registry refuses an artifact one of whose files lost its last byte (before reading it)."""
    from dope.models.registry import RegistryError

    registry, model_id, version = _registered(model, root)
    registry.load(model_id, version)
    files = sorted(p for p in (root / model_id).rglob("*") if p.is_file() and p.name != "metadata.json")
    target = max(files, key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[:-1])
    try:
        registry.load(model_id, version)
    except RegistryError:
        return
    raise CheckFailed(f"the registry loaded {model_id} after {target.name} was truncated")


def check_feature_version_refused(model: Model, root: Path) -> None:
    """Loading a registered model for features of another version raises ``FeatureVersionError``."""
    from dope.models.registry import FeatureVersionError

    registry, model_id, _ = _registered(model, root)
    try:
        registry.load(model_id, "000000000000")
    except FeatureVersionError:
        return
    raise CheckFailed(f"the registry served {model_id} to features of another version")


def latency(model: Model, X: FloatArray, calls: int = 1_000, blocks: int = 3) -> tuple[float, float]:
    """``(p50, p99)`` seconds of ``predict_one`` on windows of ``X``: the best of ``blocks`` blocks of
    ``calls`` (after a warm-up; GC off while timing), so a busy machine's preemptions count less."""
    return min((_latency_block(model, X, calls) for _ in range(blocks)), key=lambda pair: pair[1])


def _latency_block(model: Model, X: FloatArray, calls: int) -> tuple[float, float]:
    lookback = model.lookback
    windows = [np.ascontiguousarray(X[i - lookback + 1:i + 1]) for i in range(lookback - 1, len(X))]
    for window in windows[:50]:
        model.predict_one(window)
    times = np.empty(calls)
    gc.disable()
    try:
        for k in range(calls):
            window = windows[k % len(windows)]
            began = time.perf_counter()
            model.predict_one(window)
            times[k] = time.perf_counter() - began
    finally:
        gc.enable()
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


@dataclass
class Outcome:
    """One line of the report."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class Report:
    """What ``dope models check`` prints; ``passed`` only if every outcome passed."""

    kind: str
    source: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def text(self) -> str:
        """The report as lines of text, a verdict last."""
        lines = [f"conformance of model kind {self.kind} ({self.source}):"]
        lines += [f"  {'PASS' if o.passed else 'FAIL'}  {o.name:28} {o.detail}" for o in self.outcomes]
        failed = [o.name for o in self.outcomes if not o.passed]
        lines.append(f"{self.kind}: {'all ' + str(len(self.outcomes)) + ' checks passed' if not failed else 'FAILED ' + ', '.join(failed)}")
        return "\n".join(lines)


def _attempt(report: Report, name: str, check: Callable[[], str | None]) -> None:
    try:
        detail = check() or ""
    except Exception as exc:  # a plugin may raise anything: each failure is reported, not raised
        report.outcomes.append(Outcome(name, False, _reason(exc)))
        return
    report.outcomes.append(Outcome(name, True, detail))


def _reason(exc: Exception) -> str:
    if isinstance(exc, CheckFailed):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"


def _latency_check(model: Model, X: FloatArray, enforce: bool) -> str:
    p50, p99 = latency(model, X)
    detail = f"p50 {p50 * 1e6:.1f} us (budget {P50_BUDGET_S * 1e6:.0f}), p99 {p99 * 1e6:.1f} us " \
             f"(budget {P99_BUDGET_S * 1e6:.0f})"
    if not enforce:
        return detail + " (budgets not enforced)"
    if p50 > P50_BUDGET_S or p99 > P99_BUDGET_S:
        raise CheckFailed(f"over budget: {detail}")
    return detail


def run_suite(kind: str, params: Mapping[str, Any] | None = None, *, features: bool = True,
              latency_budgets: bool = True, workdir: Path | None = None) -> Report:
    """Every check on ``kind`` (``params`` over :data:`CHECK_PARAMS`), plus feature parity when ``features``.

    ``latency_budgets=False`` still times ``predict_one`` but does not fail on the budgets (a busy machine).
    """
    from dope.models.kinds import resolve_kind

    report = Report(kind, resolve_kind(kind).source)
    merged = {**CHECK_PARAMS.get(kind, {}), **(params or {})}
    X, y = sample_data()
    with tempfile.TemporaryDirectory(prefix="dope-check-") as scratch:
        root = Path(workdir or scratch)
        _model_checks(report, lambda: make_model(kind, **merged), X, y, root, latency_budgets)
    if features:
        from dope.features.parity import parity_outcomes

        report.outcomes += [Outcome(f"feature parity {name}", ok, detail)
                            for name, ok, detail in parity_outcomes()]
    return report


def _model_checks(report: Report, factory: Factory, X: FloatArray, y: FloatArray, root: Path,
                  latency_budgets: bool) -> None:
    fitted: list[Model] = []

    def fit() -> str:
        fitted.append(fit_without_mutation(factory, X, y))
        return f"lookback {fitted[0].lookback}, {len(X)} rows x {X.shape[1]} features"

    _attempt(report, "fit (inputs unchanged)", fit)
    if not fitted:
        return
    model = fitted[0]
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("no look-ahead", lambda: check_no_look_ahead(model, X)),
        ("predict_one == predict_many", lambda: check_one_equals_many(model, X)),
        ("finite predictions", lambda: check_finite(model, X)),
        ("reproducible fit", lambda: check_reproducible(model, factory, X, y)),
        ("save/load round trip", lambda: check_round_trip(model, X, root / "saved")),
        ("corrupted artifact refused", lambda: check_corrupt_refused(model, root / "registry-corrupt")),
        ("feature-version mismatch", lambda: check_feature_version_refused(model, root / "registry-version")),
        ("latency predict_one", lambda: _latency_check(model, X, latency_budgets)),
    ]
    for name, check in checks:
        _attempt(report, name, check)
