"""Benchmark: what the plugin indirection adds to a single prediction (budget: 5 us).

The same fitted model goes through the model service's path (registry load, then
``LoadedModel.predict``) twice in one run: once as the built-in kind, once as a plugin kind (a
subclass defined outside ``dope.models`` and named as ``module:Class``, the way a plugin package's
class is found). Calls of the two take turns in every round, so a noisy neighbour slows both alike;
the medians, their difference and ratio are printed.

    .venv/bin/python bench/bench_plugin.py             # ridge, momentum and zero, 20 000 calls each
    .venv/bin/python bench/bench_plugin.py --calls 2000 --kinds momentum
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dope.features import default_feature_set
from dope.models import make_model
from dope.models.registry import Registry
from dope.models.serving import LoadedModel
from dope.training.conformance import sample_data

BUDGET_US = 5.0
PLUGIN_CLASSES = {"ridge": "RidgePlugin", "momentum": "MomentumPlugin", "zero": "ZeroPlugin"}


def plugin_module(folder: Path) -> str:
    """Write a module outside dope with one subclass per built-in kind (kinds of their own); its name."""
    (folder / "bench_plugin_models.py").write_text(
        "from dope.models.baselines import MomentumModel, RidgeModel, ZeroModel\n\n\n"
        "class RidgePlugin(RidgeModel):\n    kind = 'ridge_plugin'\n\n\n"
        "class MomentumPlugin(MomentumModel):\n    kind = 'momentum_plugin'\n\n\n"
        "class ZeroPlugin(ZeroModel):\n    kind = 'zero_plugin'\n")
    sys.path.insert(0, str(folder))
    return "bench_plugin_models"


def served(registry: Registry, kind: str, X: np.ndarray, y: np.ndarray) -> LoadedModel:
    """``kind`` fitted, registered and loaded back as the model service does."""
    fs = default_feature_set(10_000, plugins=())
    model_id = registry.register(make_model(kind).fit(X, y), feature_set=fs, symbol="BENCH", interval_ms=10_000,
                                 train_start_ms=0, train_end_ms=10_000)
    return LoadedModel(*registry.load(model_id, fs.version))


def per_call_us(loaded: LoadedModel, windows: list[np.ndarray]) -> float:
    """Mean microseconds per ``predict`` over ``windows``."""
    began = time.perf_counter()
    for window in windows:
        loaded.predict(window)
    return (time.perf_counter() - began) / len(windows) * 1e6


def compare(kind: str, module: str, registry: Registry, calls: int, rounds: int) -> None:
    X, y = sample_data(1_000, 21)
    builtin = served(registry, kind, X, y)
    plugin = served(registry, f"{module}:{PLUGIN_CLASSES[kind]}", X, y)
    windows = [X[i:i + 1] for i in range(len(X))] * max(1, calls // len(X) // rounds)
    assert [plugin.predict(w) for w in windows[:50]] == [builtin.predict(w) for w in windows[:50]]
    times: dict[str, list[float]] = {"built-in": [], "plugin": []}
    for _ in range(rounds):
        times["built-in"].append(per_call_us(builtin, windows))
        times["plugin"].append(per_call_us(plugin, windows))
    a, b = statistics.median(times["built-in"]), statistics.median(times["plugin"])
    verdict = "within" if b - a <= BUDGET_US else "OVER"
    print(f"{kind:10} built-in {a:8.2f} us   plugin {b:8.2f} us   difference {b - a:+6.2f} us "
          f"(budget {BUDGET_US:.0f} us: {verdict})   ratio {b / a:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="predictions per path and kind")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds")
    parser.add_argument("--kinds", nargs="*", default=list(PLUGIN_CLASSES), choices=list(PLUGIN_CLASSES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        module = plugin_module(Path(scratch))
        registry = Registry(Path(scratch) / "registry")
        print(f"single prediction through the model service's path, median of {args.rounds} alternating rounds")
        for kind in args.kinds:
            compare(kind, module, registry, args.calls, args.rounds)


if __name__ == "__main__":
    main()
