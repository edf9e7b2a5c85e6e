"""The plugin API: one kind resolver (built-in, entry point, module:Class), the artifact allow-list,
``dope models kinds`` / ``dope models check`` on built-in, good and deliberately broken models, and
plugin features in both feature paths and in the feature version."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from dope.cli import main
from dope.features import FeatureSet, OnlineFeaturizer, compute_features, default_feature_set, training_matrix
from dope.features import definitions as d
from dope.features.parity import feature_parity, parity_bars, registered_features
from dope.features.plugins import FeatureDefinition
from dope.models import ModelError, load_model, make_model
from dope.models import kinds as kinds_module
from dope.models.registry import FeatureVersionError, Registry
from dope.training.conformance import run_suite, sample_data

BROKEN = "tests.unit.broken_models"
GOOD = f"{BROKEN}:GoodMomentum"


@pytest.fixture
def no_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that never named a module:Class kind itself, and no DOPE_ALLOW_MODELS."""
    monkeypatch.setattr(kinds_module, "_allowed", set())
    monkeypatch.delenv(kinds_module.ALLOW_ENV, raising=False)


def check(kind: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["models", "check", kind, "--no-features", "--no-latency-budget"])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("kind", ["zero", "ridge", "random_forest", "momentum"])
def test_built_in_kinds_pass_the_suite(kind: str) -> None:
    report = run_suite(kind, features=False, latency_budgets=False)
    assert report.passed, report.text()
    latency = next(o for o in report.outcomes if o.name == "latency predict_one")
    assert "p50" in latency.detail and "p99" in latency.detail
    assert len(report.outcomes) == 9


def test_a_good_module_class_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(GOOD, capsys)
    assert code == 0, out
    assert f"conformance of model kind {GOOD} (module)" in out and "all 9 checks passed" in out


@pytest.mark.parametrize(("name", "failing"), [
    ("PeekingModel", "no look-ahead"),
    ("DisagreeingModel", "predict_one == predict_many"),
    ("ForgetfulModel", "save/load round trip"),
])
def test_broken_models_fail_with_a_clear_report(name: str, failing: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(f"{BROKEN}:{name}", capsys)
    assert code == 1
    line = next(line for line in out.splitlines() if failing in line and "FAIL" in line)
    assert line.strip().startswith(f"FAIL  {failing}")
    assert "PASS  fit (inputs unchanged)" in out and "FAILED" in out.splitlines()[-1]


def test_the_report_names_the_failing_row(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = check(f"{BROKEN}:PeekingModel", capsys)
    assert "look-ahead: cutting the data at row" in out


def test_check_exits_nonzero_when_over_the_latency_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from dope.training import conformance

    monkeypatch.setattr(conformance, "latency", lambda model, X: (150e-6, 1e-3))
    report = run_suite("zero", features=False)
    assert not report.passed and "over budget: p50 150.0 us" in report.text()


def test_kinds_lists_built_ins_with_their_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "kinds", "--json"]) == 0
    listed = {k["kind"]: k for k in json.loads(capsys.readouterr().out)}
    assert listed["ridge"] == {"kind": "ridge", "class": "dope.models.baselines:RidgeModel", "source": "built-in"}


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown model kind 'nope'; known kinds: random_forest, .*ridge"):
        make_model("nope")


def test_a_plugin_cannot_claim_a_built_in_kind() -> None:
    assert make_model("dope.models.baselines:MomentumModel").kind == "momentum"  # the built-in class itself
    with pytest.raises(ModelError, match="claims the built-in kind 'momentum'"):
        make_model("tests.unit.test_plugins:ClaimsMomentum")


class ClaimsMomentum:  # noqa: D101 - a class that only looks like a model
    kind = "momentum"
    from_params = load = fit = predict_many = predict_one = save = metadata = None


def test_module_class_artifacts_load_only_when_allowed(tmp_path: Path, no_allowed: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = sample_data(100)
    model = make_model(GOOD).fit(X, y)  # naming it trusts it in this process
    model.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["class"] == GOOD
    np.testing.assert_array_equal(load_model(tmp_path).predict_many(X), model.predict_many(X))
    monkeypatch.setattr(kinds_module, "_allowed", set())
    with pytest.raises(ModelError, match="not allowed: refusing to import it"):
        load_model(tmp_path)
    monkeypatch.setenv(kinds_module.ALLOW_ENV, f"other:Thing, {GOOD}")
    np.testing.assert_array_equal(load_model(tmp_path).predict_many(X), model.predict_many(X))


def test_an_artifact_naming_an_unknown_module_never_imports_it(tmp_path: Path, no_allowed: None) -> None:
    sys.modules.pop("tests.unit.artifact_trap", None)  # the suite's doctest collection imports every module once
    os.environ.pop("DOPE_TEST_TRAP_IMPORTED", None)
    make_model("zero").fit(np.ones((3, 2)), np.zeros(3)).save(tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    info.update(kind="trap", **{"class": "tests.unit.artifact_trap:Trap"})
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="tests.unit.artifact_trap:Trap.*not allowed"):
        load_model(tmp_path)
    assert "tests.unit.artifact_trap" not in sys.modules and "DOPE_TEST_TRAP_IMPORTED" not in os.environ


# ---- plugin features ----------------------------------------------------------------------------

@numba.njit(cache=False)  # type: ignore[misc]
def _return_skew(w: np.ndarray) -> float:  # pragma: no cover - compiled
    r = w[d.CH_RETURN]
    mean = 0.0
    for v in r:
        mean += v
    mean /= r.shape[0]
    acc = 0.0
    for v in r:
        acc += (v - mean) ** 3
    return acc / r.shape[0] * 1e12


SKEW = FeatureDefinition("ret_skew_150", 150, _return_skew)


def with_skew() -> FeatureSet:
    return FeatureSet("default", default_feature_set(10_000, plugins=()).params, (SKEW,))


def test_a_plugin_feature_runs_in_both_paths() -> None:
    fs = with_skew()
    assert fs.names[-1] == "ret_skew_150" and fs.warmup == 150 and fs.n_builtin == len(fs.names) - 1
    assert feature_parity("ret_skew_150", fs) == (True, feature_parity("ret_skew_150", fs)[1])
    frame = parity_bars()
    X, _, times = training_matrix(frame, fs, 1)
    offline = compute_features(frame, fs)
    assert X.shape[1] == len(fs.names) and np.isfinite(X[:, -1]).all() and np.abs(X[:, -1]).max() > 0
    by_time = dict(zip(offline["open_time"], offline["ret_skew_150"], strict=True))
    assert [by_time[t] for t in times] == X[:, -1].tolist()
    bars = __import__("dope.bars", fromlist=["bars_from_frame"]).bars_from_frame(frame, 10_000)
    online = [v for v in map(OnlineFeaturizer(fs, "BTCUSDT").update, bars) if v is not None]
    assert [v.values[-1] for v in online] == offline["ret_skew_150"].tolist()


def test_a_model_trained_with_a_plugin_feature_is_refused_without_it(tmp_path: Path) -> None:
    from dope.training.pipeline import feature_set_of

    with_it, without = with_skew(), default_feature_set(10_000, plugins=())
    assert with_it.version != without.version and with_it.describe()["plugins"] == ["ret_skew_150"]
    X, y = sample_data(100, len(with_it.names))
    registry = Registry(tmp_path)
    model_id = registry.register(make_model("ridge").fit(X, y), feature_set=with_it, symbol="BTCUSDT",
                                 interval_ms=10_000, train_start_ms=0, train_end_ms=10_000)
    registry.load(model_id, with_it.version)
    with pytest.raises(FeatureVersionError):
        registry.load(model_id, without.version)
    with pytest.raises(FeatureVersionError, match=r"plugin features \['ret_skew_150'\] are not installed"):
        feature_set_of(registry.verify(model_id))


@pytest.mark.parametrize("name", registered_features())
def test_online_offline_parity_of_every_registered_feature(name: str) -> None:
    passed, detail = feature_parity(name)
    assert passed, detail


def test_dope_up_passes_the_configured_module_class_kinds_to_its_services() -> None:
    from dope.models.kinds import allow_env

    assert allow_env(["ridge", GOOD], {}) == {kinds_module.ALLOW_ENV: GOOD}
    assert allow_env([GOOD], {kinds_module.ALLOW_ENV: "a.b:C"}) == {kinds_module.ALLOW_ENV: f"a.b:C,{GOOD}"}
    assert allow_env(["ridge"], {}) == {}


def test_the_supervisor_child_env_allows_loop_kinds(tmp_path: Path) -> None:
    from dope.config import config_from_dict
    from dope.services.supervisor import Supervisor

    config = config_from_dict({"loop": {"kinds": [GOOD]}, "supervisor": {"services": [], "metrics": ""}})
    supervisor = Supervisor(config, tmp_path, specs=[])
    assert GOOD in supervisor.env[kinds_module.ALLOW_ENV].split(",")
