"""The whole stack under ``dope up``: bar close -> decision latency, and replay throughput.

Every service runs as its own process over ZeroMQ on loopback (the supervisor starts them):
collector (synthetic market) -> featurizer -> model services (random forest, LSTM and the zero
baseline in parallel) -> rendezvous -> trader. A tap in this process subscribes to the
collector's bars and the trader's decisions and stamps both on arrival, so the latency is
"bar published -> decision published" as one observer sees it.

1. Latency: the market paced (``--speed``) so the stack is never backlogged, rendezvous deadline 30 ms
   (the latency budget: a model later than that is passed over); p50/p99 over every
   bar with a decision. Target: p99 <= 50 ms.
2. Throughput: 6 hours of 10 s bars of one symbol (``--day``) replayed as fast as possible; bars/s from the
   first bar to the last decision. Target: >= 1,000 bars/s. With the 30 ms deadline, bars whose models
   fell behind are decided without a prediction (counted and printed); ``--replay-deadline-ms 5000``
   makes the rendezvous wait for them, so only the warm-ups go without: the features' 121 bars, then
   the next 14 while the LSTM's 16-bar window fills (those rounds wait out the deadline, and the
   trader decides without them).

Baseline, measured in the same run: the same frames (a Bar's msgpack) forwarded by raw ZeroMQ
through the same number of process hops (collector -> featurizer -> model -> rendezvous ->
trader: 4 forwarding processes), latency and throughput; the ratios are printed.

    .venv/bin/python -m bench.bench_stack [--latency-minutes 40] [--speed 30] [--day 1d] [--replay-deadline-ms 5000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import tomli_w
import zmq

from dope.bars import bars_from_frame
from dope.config import DopeConfig, config_from_dict
from dope.features import default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.messages import Bar, Decision, encode
from dope.models import make_model
from dope.models.registry import Registry
from dope.services.supervisor import resolve_ports
from dope.transport import ZmqSubscriber

INTERVAL = 10_000
START = 1_704_067_200_000
HOPS = 4
KINDS = {"random_forest": {"n_estimators": 50, "max_depth": 8}, "lstm": {"lookback": 16, "units": 16, "epochs": 1},
         "zero": {}}
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "TF_ENABLE_ONEDNN_OPTS": "0"}


def train_models(root: Path) -> dict[str, str]:
    """Random forest (champion), LSTM (challenger) and zero (canary) on a day of synthetic bars."""
    fs = default_feature_set(INTERVAL)
    frame = generate_bars(["BTCUSDT"], START - 86_400_000, START, INTERVAL, seed=11)["BTCUSDT"]
    X, y, _ = training_matrix(frame, fs, 1)
    registry = Registry(root)
    ids = {}
    for kind, params in KINDS.items():
        model = make_model(kind, **params).fit(X, y)
        ids[kind] = registry.register(model, feature_set=fs, symbol="BTCUSDT", interval_ms=INTERVAL,
                                      train_start_ms=int(frame["open_time"].iloc[0]), train_end_ms=START)
    for kind, role in (("random_forest", "champion"), ("lstm", "challenger"), ("zero", "canary")):
        registry.promote(ids[kind], role)
    return ids


def stack_config(work: Path, registry: Path, ids: dict[str, str], symbols: list[str], duration: str,
                 speed: float, deadline_ms: int = 30) -> DopeConfig:
    raw = {
        "store": {"path": str(work / "store")}, "registry": {"path": str(registry)},
        "bus": {"publish": "tcp://127.0.0.1:0", "snapshot": "tcp://127.0.0.1:0", "heartbeat_ms": 500},
        "services": {k: "tcp://127.0.0.1:0" for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard")},
        "collector": {"source": "synthetic", "symbols": symbols, "flush_every_bars": 1000},
        "synthetic": {"duration": duration, "rate_scale": 0.05, "speed": speed, "seed": 5},
        "models": {"deploy": [{"model": mid, "endpoint": "tcp://127.0.0.1:0", "name": f"model-{kind}"}
                              for kind, mid in ids.items()]},
        "rendezvous": {"deadline_ms": deadline_ms, "persist_every": 1000},
        "decoy": {"flush_every": 1000},
        "trader": {"upper": 0.0, "lower": 0.0, "state_dir": str(work / "trader"), "journal_fsync": False},
        "supervisor": {"services": ["featurizer", "models", "decoy", "rendezvous", "trader", "collector"],
                       "metrics": "", "stop_timeout_ms": 5_000},
    }
    return resolve_ports(config_from_dict(raw))


class Tap:
    """Arrival times (perf_counter ns) of every bar and every decision, by (symbol, open_time)."""

    def __init__(self, config: DopeConfig) -> None:
        self.bars: dict[tuple[str, int], int] = {}
        self.decisions: dict[tuple[str, int], int] = {}
        self.predicted: set[tuple[str, int]] = set()
        self._sub = ZmqSubscriber([config.bus.publish, config.services.trader], ["bar.", "decision."])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.receive(20)
            now = time.perf_counter_ns()
            if isinstance(msg, Bar):
                self.bars[(msg.symbol, msg.open_time)] = now
            elif isinstance(msg, Decision):
                self.decisions[(msg.symbol, msg.open_time)] = now
                if msg.prediction is not None:
                    self.predicted.add((msg.symbol, msg.open_time))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sub.close()


def run_stack(config: DopeConfig, work: Path) -> Tap:
    """``dope up --exit-when-done`` on ``config`` with a tap attached."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "dope.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(config)))
    tap = Tap(config)
    args = [sys.executable, "-m", "dope.cli", "up", "--config", str(path), "--run-dir", str(work / "run"),
            "--no-bootstrap", "--exit-when-done"]
    with open(work / "up.log", "wb") as log:
        code = subprocess.run(args, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=log,
                              timeout=900).returncode
    tap.close()
    if code != 0:
        raise SystemExit(f"dope up failed ({code}); see {work / 'up.log'}")
    return tap


def latencies_ms(tap: Tap) -> np.ndarray:
    """Bar -> decision of the bars decided on a prediction (warm-up bars wait for the trader's timeout)."""
    keys = [k for k in tap.decisions if k in tap.bars and k in tap.predicted]
    return np.array([(tap.decisions[k] - tap.bars[k]) / 1e6 for k in keys])


# ---- the raw zmq baseline -----------------------------------------------------------------------

def _forward(inbound: str, outbound: str) -> None:
    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.rcvhwm = pub.sndhwm = 0  # unbounded, as the bus' publishers: nothing dropped
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(inbound)
    pub.bind(outbound)
    while True:
        frames = sub.recv_multipart()
        if frames[0] == b"stop":
            pub.send_multipart(frames)
            break
        pub.send_multipart(frames)
    time.sleep(0.2)
    sub.close(0)
    pub.close(0)
    ctx.term()


def raw_baseline(n_latency: int, n_throughput: int) -> tuple[np.ndarray, float]:
    """Latency (ms) of single frames and frames/s of a burst through ``HOPS`` forwarding processes."""
    from dope.services.supervisor import free_port

    ports = [free_port() for _ in range(HOPS + 1)]
    urls = [f"tcp://127.0.0.1:{p}" for p in ports]
    workers = [multiprocessing.Process(target=_forward, args=(urls[i], urls[i + 1]), daemon=True) for i in range(HOPS)]
    for w in workers:
        w.start()
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.sndhwm = sub.rcvhwm = 0
    pub.bind(urls[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(urls[-1])
    body = encode(bars_from_frame(generate_bars(["BTCUSDT"], START, START + INTERVAL, INTERVAL)["BTCUSDT"],
                                  INTERVAL)[0])
    while not sub.poll(100):  # the chain is up when a probe gets through
        pub.send_multipart([b"probe", body])
    while sub.poll(200):
        sub.recv_multipart()
    lat = []
    for _ in range(n_latency):
        began = time.perf_counter_ns()
        pub.send_multipart([b"bar.BTCUSDT", body])
        sub.recv_multipart()
        lat.append((time.perf_counter_ns() - began) / 1e6)
        time.sleep(0.002)
    began = time.perf_counter()
    for _ in range(n_throughput):
        pub.send_multipart([b"bar.BTCUSDT", body])
    received = 0
    while received < n_throughput and sub.poll(5_000):
        sub.recv_multipart()
        received += 1
    rate = received / (time.perf_counter() - began)
    pub.send_multipart([b"stop", b""])
    for w in workers:
        w.join(5)
    pub.close(0)
    sub.close(0)
    ctx.term()
    return np.array(lat), rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-minutes", type=int, default=30, help="market minutes for the latency run")
    parser.add_argument("--speed", type=float, default=30.0, help="market speed for the latency run")
    parser.add_argument("--day", default="6h", help="market time replayed for the throughput run")
    parser.add_argument("--replay-deadline-ms", type=int, default=30,
                        help="rendezvous deadline of the throughput run (a long one: every bar gets its prediction)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        ids = train_models(root / "registry")
        print(f"trained {', '.join(ids)} in {time.perf_counter() - began:.1f} s")
        config = stack_config(root / "lat", root / "registry", ids, ["BTCUSDT", "ETHUSDT"],
                              f"{args.latency_minutes}m", args.speed)
        lat = latencies_ms(run_stack(config, root / "lat"))
        config = stack_config(root / "tp", root / "registry", ids, ["BTCUSDT"], args.day, 0.0,
                              args.replay_deadline_ms)
        tap = run_stack(config, root / "tp")
        first, last = min(tap.bars.values()), max(tap.decisions[k] for k in tap.predicted)
        bars_per_s = len(tap.predicted) / ((last - first) / 1e9)
        raw_lat, raw_rate = raw_baseline(500, 20_000)
    report(lat, bars_per_s, len(tap.predicted), raw_lat, raw_rate)
    warm_up = default_feature_set(INTERVAL).warmup
    order = sorted(tap.decisions)
    late = [i for i, k in enumerate(order) if i >= warm_up and k not in tap.predicted]
    print(f"  throughput run: deadline {args.replay_deadline_ms} ms; {len(order)} bars decided; without a "
          f"prediction: the first {warm_up} (feature warm-up) and {len(late)} more"
          + (f" (bars {late[0]}..{late[-1]})" if late and late[-1] - late[0] == len(late) - 1 else ""))


def report(lat: np.ndarray, bars_per_s: float, n_bars: int, raw_lat: np.ndarray, raw_rate: float) -> None:
    p50, p99 = np.percentile(lat, [50, 99])
    r50, r99 = np.percentile(raw_lat, [50, 99])
    print(f"bar -> decision (RF + LSTM + zero in parallel), {len(lat)} bars: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(target p99 <= 50 ms: {'met' if p99 <= 50 else 'NOT met'})")
    print(f"raw zmq through {HOPS} forwarding processes: p50 {r50:.3f} ms, p99 {r99:.3f} ms; "
          f"stack / raw: p50 x{p50 / r50:.1f}, p99 x{p99 / r99:.1f}")
    print(f"replay throughput, whole stack: {n_bars} bars at {bars_per_s:,.0f} bars/s "
          f"(target >= 1,000: {'met' if bars_per_s >= 1000 else 'NOT met'}); raw zmq {raw_rate:,.0f} frames/s; "
          f"stack / raw x{bars_per_s / raw_rate:.3f}")


if __name__ == "__main__":
    main()
