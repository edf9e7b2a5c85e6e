"""Benchmark: the online model's work per bar (``learn_one`` + ``predict_one``) against the 1 ms p99 target, with
baselines measured in the same run: a bare numpy dot of the same size and the static ridge's ``predict_one``.

    .venv/bin/python bench/bench_online.py            # 2 days of 10 s bars: fit on the first, time the second
    .venv/bin/python bench/bench_online.py --days 1

Three timings per bar (nanoseconds of ``perf_counter_ns``, each bar timed alone, the kinds taking turns):
``model``: ``learn_one`` of the row whose label the bar realised, then ``predict_one`` of the bar's row;
``service path``: the model service's whole per-symbol step (``OnlineTrack.on_bar`` + ``on_features``:
the label from the closes, the learning, the prediction); ``numpy dot``: ``weights @ row`` (21 floats).
Then the time of one snapshot of the track (written after the scores are published, so never in a score's latency).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dope.features import default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.models import make_model
from dope.models.online import OnlineRidgeModel
from dope.rendezvous.online import OnlineTrack, SnapshotStore

START = 1_704_067_200_000  # 2024-01-01 UTC
DAY_MS = 86_400_000
INTERVAL = 10_000
TARGET_P99_US = 1_000.0


def percentiles(ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    arr = np.asarray(ns, dtype=np.float64) / 1_000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    args = parser.parse_args(argv)
    frame = generate_bars(["BTCUSDT"], START, START + args.days * DAY_MS, INTERVAL, seed=7)["BTCUSDT"]
    X, y, times = training_matrix(frame, default_feature_set(INTERVAL), 1)
    closes = frame.set_index("open_time")["close"].reindex(times).to_numpy()
    half = len(X) // 2
    model = make_model("online_ridge").fit(X[:half], y[:half])
    assert isinstance(model, OnlineRidgeModel)
    track: OnlineTrack[int] = OnlineTrack(make_model("online_ridge").fit(X[:half], y[:half]), "BTCUSDT", 1)
    ridge = make_model("ridge").fit(X[:half], y[:half])
    weights = np.ascontiguousarray(model.weights[1:])
    timings: dict[str, list[int]] = {"model": [], "service path": [], "numpy dot": [], "ridge predict_one": []}
    sink = 0.0
    for i in range(half, len(X)):
        row = X[i]
        began = time.perf_counter_ns()
        model.learn_one(X[i - 1], math.log(closes[i] / closes[i - 1]))
        sink += model.predict_one(row)
        timings["model"].append(time.perf_counter_ns() - began)
        began = time.perf_counter_ns()
        track.on_bar(int(times[i]), INTERVAL, float(closes[i]))
        sink += track.on_features(int(times[i]), row, i)[0][1]
        timings["service path"].append(time.perf_counter_ns() - began)
        began = time.perf_counter_ns()
        sink += float(weights @ row)
        timings["numpy dot"].append(time.perf_counter_ns() - began)
        began = time.perf_counter_ns()
        sink += ridge.predict_one(row)
        timings["ridge predict_one"].append(time.perf_counter_ns() - began)
    print(f"{len(X) - half:,} bars, {X.shape[1]} features (fitted on {half:,}); checksum {sink:.6g}")
    print(f"{'per bar':<40}{'p50 us':>10}{'p99 us':>10}")
    for name, ns in timings.items():
        p50, p99 = percentiles(ns)
        print(f"{name:<40}{p50:10.1f}{p99:10.1f}")
    model_p99 = percentiles(timings["model"])[1]
    service_p99 = percentiles(timings["service path"])[1]
    print(f"learn_one + predict_one p99 / numpy dot p99:        {model_p99 / percentiles(timings['numpy dot'])[1]:8.1f}x")
    print(f"learn_one + predict_one p99 / ridge predict_one p99: "
          f"{model_p99 / percentiles(timings['ridge predict_one'])[1]:7.2f}x")
    print(f"learn_one + predict_one p99 / 1 ms target:           {model_p99 / TARGET_P99_US:8.3f}"
          f"  ({'met' if model_p99 <= TARGET_P99_US else 'MISSED'})")
    print(f"service path p99 / 1 ms target:                      {service_p99 / TARGET_P99_US:8.3f}"
          f"  ({'met' if service_p99 <= TARGET_P99_US else 'MISSED'})")
    print_snapshot_time(track)
    return 0


def print_snapshot_time(track: OnlineTrack[int], count: int = 200) -> None:
    """p50/p99 of ``SnapshotStore.save`` of ``track`` into a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        store, ns = SnapshotStore(Path(folder)), []
        for _ in range(count):
            began = time.perf_counter_ns()
            store.save(track, "bench")
            ns.append(time.perf_counter_ns() - began)
    p50, p99 = percentiles(ns)
    print(f"{'snapshot (after publishing)':<40}{p50:10.1f}{p99:10.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
