"""Bar -> decision latency of the stack while the loop's trainer fits, against the same run without the trainer.

Two ``dope up`` runs of the synthetic market (10 s bars, BTCUSDT and ETHUSDT, paced at ``--speed``), the
same models (random forest champion, zero canary, deployed by role) and the same stored history (2,000 bars
before the start), tapped as in ``bench.bench_stack``:

1. **loop**: ``[loop] enabled`` with ``barrier = false`` (fits run while bars flow, as on the live exchange),
   a random forest refitted every ``--retrain-every`` of market time on the last day stored (2,000+ rows),
   in the trainer's niced child process (one after the other: at these settings a fit runs most of the time). The p99 is over the bars published while a fit child ran (the trainer's
   ``loop.fit_running`` heartbeat counter, polled from ``status.json``).
2. **baseline**: the same configuration with the loop off.

Target: loop p99 <= 1.2 x baseline p99. The machine's other load moves both figures: run it on a quiet
machine, or several times.

    .venv/bin/python -m bench.bench_loop_latency [--minutes 200] [--speed 100] [--retrain-every 10m]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_stack import INTERVAL, START, Tap, run_stack
from dope.config import DopeConfig, config_from_dict
from dope.features import default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.models import make_model
from dope.models.registry import Registry
from dope.services.supervisor import resolve_ports
from dope.store import BarStore

RF = {"n_estimators": 50, "max_depth": 8, "n_jobs": 1}


SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def prepare(root: Path, store: Path) -> None:
    """Random forest (champion) and zero (canary) trained on the 2,000 synthetic bars before the run, which
    are also the store's history (the featurizer warms up from it, the trainer fits on it)."""
    fs = default_feature_set(INTERVAL)
    frames = generate_bars(SYMBOLS, START - 2_000 * INTERVAL, START, INTERVAL, seed=11)
    for frame in frames.values():
        BarStore(store).write_bars(frame, INTERVAL)
    X, y, _ = training_matrix(frames["BTCUSDT"], fs, 1)
    registry = Registry(root)
    for kind, params, role in (("random_forest", RF, "champion"), ("zero", {}, "canary")):
        model_id = registry.register(make_model(kind, **params).fit(X, y), feature_set=fs, symbol="BTCUSDT",
                                     interval_ms=INTERVAL, train_start_ms=START - 2_000 * INTERVAL, train_end_ms=START)
        registry.promote(model_id, role)


def config(work: Path, registry: Path, minutes: int, speed: float, loop: bool, retrain_every: str) -> DopeConfig:
    raw: dict[str, Any] = {
        "store": {"path": str(work / "store")}, "registry": {"path": str(registry)},
        "bus": {"publish": "tcp://127.0.0.1:0", "snapshot": "tcp://127.0.0.1:0", "heartbeat_ms": 200},
        "services": {k: "tcp://127.0.0.1:0"
                     for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard", "trainer")},
        "models": {"deploy": [{"model": f"role:{role}", "endpoint": "tcp://127.0.0.1:0", "name": role}
                              for role in ("champion", "canary")]},
        "collector": {"source": "synthetic", "symbols": SYMBOLS, "flush_every_bars": 10},
        "synthetic": {"duration": f"{minutes}m", "rate_scale": 0.05, "speed": speed, "seed": 5},
        "rendezvous": {"persist_every": 1000},
        "trader": {"upper": 0.0, "lower": 0.0, "state_dir": str(work / "trader"), "journal_fsync": False},
        "supervisor": {"services": ["featurizer", "models", "decoy", "rendezvous", "trader", "collector"],
                       "metrics": "", "stop_timeout_ms": 5_000},
        "loop": {"enabled": loop, "barrier": False, "kinds": ["random_forest"], "retrain_every": retrain_every,
                 "train_window": "1d", "min_train_bars": 100, "min_bars": 100, "mode": "off",
                 "params": {"random_forest": RF}, "min_retrain_gap": "1m"},
    }
    return resolve_ports(config_from_dict(raw))


class FitWatch:
    """When the trainer's fit child ran (perf_counter ns intervals), from ``<run dir>/status.json``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "status.json"
        self.samples: list[tuple[int, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                counters = json.loads(self.path.read_text())["services"]["trainer"]["counters"]
                self.samples.append((time.perf_counter_ns(), counters.get("loop.fit_running") == 1))
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)

    def fitting(self, at_ns: int) -> bool:
        """Whether the nearest samples around ``at_ns`` both saw a fit running."""
        before = [f for t, f in self.samples if t <= at_ns][-1:]
        after = [f for t, f in self.samples if t >= at_ns][:1]
        return bool(before and after and before[0] and after[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def bar_to_decision_ms(tap: Tap, keep: Any = None) -> np.ndarray:
    keys = [k for k in tap.predicted if k in tap.bars and (keep is None or keep(tap.bars[k]))]
    return np.array([(tap.decisions[k] - tap.bars[k]) / 1e6 for k in keys])


def p(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (NaN when empty)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=200, help="synthetic market minutes per run")
    parser.add_argument("--speed", type=float, default=100.0, help="market speed (x real time)")
    parser.add_argument("--retrain-every", default="10m", help="market time between fits")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dope-bench-loop-") as tmp:
        work = Path(tmp)
        figures = {}
        for name, loop in (("baseline", False), ("loop", True)):
            registry = work / name / "registry"
            prepare(registry, work / name / "store")
            cfg = config(work / name, registry, args.minutes, args.speed, loop, args.retrain_every)
            watch = FitWatch(work / name / "run")
            tap = run_stack(cfg, work / name)
            watch.close()
            every = bar_to_decision_ms(tap)
            during = bar_to_decision_ms(tap, watch.fitting) if loop else every
            fits = json.loads((work / name / "run" / "status.json").read_text())["services"].get("trainer", {})
            figures[name] = (every, during, fits.get("counters", {}).get("fits_succeeded", 0))
        base, (every, during, fits) = figures["baseline"][0], figures["loop"]
        print(f"baseline (no trainer): {len(base)} bars, bar -> decision p50 {p(base, 50):.2f} ms, "
              f"p99 {p(base, 99):.2f} ms")
        print(f"loop, every bar:       {len(every)} bars, p50 {p(every, 50):.2f} ms, p99 {p(every, 99):.2f} ms "
              f"({fits} fits)")
        print(f"loop, while fitting:   {len(during)} bars, p50 {p(during, 50):.2f} ms, p99 {p(during, 99):.2f} ms")
        print(f"ratio p99 while fitting / baseline p99: {p(during, 99) / p(base, 99):.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
