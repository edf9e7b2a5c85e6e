"""The whole stack under ``dope up``: bar close -> decision latency, and full-speed replay throughput.

Every service runs as its own process over ZeroMQ on loopback (the supervisor starts them, with its
default settings): collector -> featurizer -> model services (random forest champion, LSTM challenger
and zero canary in parallel) -> rendezvous -> trader, with flow control. A tap in this process
subscribes to every hop (bars, features, scores, predictions, decisions) and stamps each message on
arrival, so the latency is "bar published -> decision published" as one observer sees it, and the
per-hop deltas (``--hops``) say where the time goes. Endpoints are ``ipc://`` sockets, as ``dope up``
places them by default.

1. Latency: the synthetic market (2 symbols, 10 s bars) paced (``--speed``) so the stack is never
   backlogged, with the rendezvous of a live run (``deadline_mode = "wall"``: a prediction leaves as
   soon as the champion's score is in, and the LSTM and zero models yield ``models.yield_ms`` to it);
   p50/p99 over every bar decided on a prediction (``--latency-minutes`` gives >= 2,000).
   Target: p50 <= 2 ms, p99 <= 10 ms.
2. Throughput: ``dope up --replay --speed 0`` of the real recorded trades bundled with DOPE (BTCUSDT and
   ETHUSDT, 11 minutes) at 1 s bars, with the default rendezvous (event deadlines: deterministic);
   bars/s from the first bar to the last decision, and how many bars after the feature warm-up went
   without a prediction (target: none). Target: >= 1,000 bars/s.

Baseline, measured in the same run: the same frames (a Bar's msgpack) forwarded by raw ZeroMQ
through the same number of process hops (collector -> featurizer -> model -> rendezvous ->
trader: 4 forwarding processes, ``ipc://``), latency and throughput; the ratios are printed. The
latency baseline is paced as the stack is: two frames (two symbols) at once every bar interval /
``--speed``, because a hop costs more when the processes woke from idle than in a tight loop.

    .venv/bin/python -m bench.bench_stack [--latency-minutes 200] [--speed 100] [--floor] [--yield-ms N]

``--floor`` also times the path alone (the champion's service only, no LSTM, zero or decoy beside it):
what the five process hops cost on this machine before any parallel model competes for its cores.
``--yield-ms 0`` times the stack with every model scoring at once (no model yields to the champion).
"""

from __future__ import annotations

import argparse
import gc
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
from dope.messages import AnyMessage, Bar, Decision, Features, Prediction, Score, encode
from dope.models import make_model
from dope.models.registry import Registry
from dope.services.supervisor import resolve_ports
from dope.transport import ZmqSubscriber

INTERVAL = 10_000
REPLAY_INTERVAL = 1_000
START = 1_704_067_200_000
HOPS = 4
KINDS = {"random_forest": {"n_estimators": 50, "max_depth": 8}, "lstm": {"lookback": 16, "units": 16, "epochs": 1},
         "zero": {}}
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
       "TF_ENABLE_ONEDNN_OPTS": "0"}


def train_models(root: Path, interval_ms: int) -> dict[str, str]:
    """Random forest (champion), LSTM (challenger) and zero (canary) on 8,640 synthetic bars."""
    fs = default_feature_set(interval_ms)
    frame = generate_bars(["BTCUSDT"], START - 8_640 * interval_ms, START, interval_ms, seed=11)["BTCUSDT"]
    X, y, _ = training_matrix(frame, fs, 1)
    registry = Registry(root)
    ids = {}
    for kind, params in KINDS.items():
        model = make_model(kind, **params).fit(X, y)
        ids[kind] = registry.register(model, feature_set=fs, symbol="BTCUSDT", interval_ms=interval_ms,
                                      train_start_ms=int(frame["open_time"].iloc[0]), train_end_ms=START)
    for kind, role in (("random_forest", "champion"), ("lstm", "challenger"), ("zero", "canary")):
        registry.promote(ids[kind], role)
    return ids


def stack_config(work: Path, registry: Path, ids: dict[str, str], source: dict[str, object],
                 deadline_mode: str = "auto", lstm_delay_ms: int = 0, decoy: bool = True,
                 yield_ms: int | None = None) -> DopeConfig:
    """The stack on ``ipc://`` sockets under ``work`` with the models of ``ids``; ``source``: sections naming
    the market; ``decoy=False`` leaves the decoy out; ``yield_ms``: ``models.yield_ms`` (None: the default)."""
    bus = work / "bus"
    bus.mkdir(parents=True, exist_ok=True)
    raw = {
        "store": {"path": str(work / "store")}, "registry": {"path": str(registry)},
        "bus": {"publish": f"ipc://{bus}/collector.sock", "snapshot": f"ipc://{bus}/snapshot.sock",
                "heartbeat_ms": 500},
        "services": {k: f"ipc://{bus}/{k}.sock" for k in ("featurizer", "decoy", "rendezvous", "trader", "dashboard")},
        "models": {"deploy": [{"model": mid, "endpoint": f"ipc://{bus}/{kind}.sock", "name": f"model-{kind}",
                               "delay_ms": lstm_delay_ms if kind == "lstm" else 0} for kind, mid in ids.items()],
                   **({} if yield_ms is None else {"yield_ms": yield_ms})},
        "rendezvous": {"persist_every": 1000, "deadline_mode": deadline_mode},
        "decoy": {"flush_every": 1000},
        "trader": {"upper": 0.0, "lower": 0.0, "state_dir": str(work / "trader"), "journal_fsync": False},
        "supervisor": {"services": ["featurizer", "models", *(["decoy"] if decoy else []), "rendezvous", "trader",
                                    "collector"],
                       "metrics": "", "stop_timeout_ms": 5_000},
        **source,
    }
    return resolve_ports(config_from_dict(raw))


def synthetic_market(minutes: int, speed: float) -> dict[str, object]:
    return {"collector": {"source": "synthetic", "symbols": ["BTCUSDT", "ETHUSDT"], "flush_every_bars": 1000},
            "synthetic": {"duration": f"{minutes}m", "rate_scale": 0.05, "speed": speed, "seed": 5}}


def real_replay() -> dict[str, object]:
    return {"collector": {"source": "replay", "symbols": ["BTCUSDT", "ETHUSDT"]}, "replay": {"speed": 0.0},
            "bars": {"interval": "1s"}}


Key = tuple[str, int]
STAGE: dict[type, str] = {Bar: "bar", Features: "features", Score: "score", Prediction: "prediction",
                          Decision: "decision"}
HOP_NAMES = ("bar -> features", "features -> last score", "last score -> prediction", "prediction -> decision")


class Tap:
    """Arrival times (perf_counter ns) of every bar, feature vector, score, prediction and decision."""

    def __init__(self, config: DopeConfig, hops: bool = False) -> None:
        self.seen: dict[str, dict[Key, int]] = {k: {} for k in ("bar", "features", "score", "prediction", "decision")}
        self.predicted: set[Key] = set()
        endpoints = [config.bus.publish, config.services.trader]
        if hops:  # every hop: says where the time goes, but the tap's own decoding competes for the CPU
            endpoints += [config.services.featurizer, config.services.rendezvous,
                          *(d.endpoint for d in config.models.deploy)]
        self._sub = ZmqSubscriber(endpoints, ["bar.", "features.", "score.", "prediction.", "decision."])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def bars(self) -> dict[Key, int]:
        return self.seen["bar"]

    @property
    def decisions(self) -> dict[Key, int]:
        return self.seen["decision"]

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.receive(20)
            if msg is not None:
                self._stamp(msg, time.perf_counter_ns())

    def _stamp(self, msg: AnyMessage, now: int) -> None:
        if not isinstance(msg, Bar | Features | Score | Prediction | Decision):
            return
        key = (msg.symbol, msg.open_time)
        self.seen[STAGE[type(msg)]][key] = now  # the last score of a bar overwrites the earlier ones
        if isinstance(msg, Decision) and msg.prediction is not None:
            self.predicted.add(key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sub.close()


def run_stack(config: DopeConfig, work: Path, hops: bool = False) -> Tap:
    """``dope up --exit-when-done`` on ``config`` with a tap attached."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "dope.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(config)))
    gc.collect()
    gc.freeze()  # this process trained the models (TensorFlow loaded): no long GC pause in the tap's stamps
    tap = Tap(config, hops)
    args = [sys.executable, "-m", "dope.cli", "up", "--config", str(path), "--run-dir", str(work / "run"),
            "--no-bootstrap", "--exit-when-done"]
    with open(work / "up.log", "wb") as log:
        code = subprocess.run(args, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=log,
                              timeout=900).returncode
    tap.close()
    if code != 0:
        raise SystemExit(f"dope up failed ({code}); see {work / 'up.log'}")
    return tap


def latencies_ms(tap: Tap) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bar -> decision of the bars decided on a prediction, and the four hops' times of the same bars."""
    stages = [tap.seen[k] for k in ("bar", "features", "score", "prediction", "decision")]
    keys = [k for k in tap.predicted if k in tap.bars]
    total = np.array([(tap.decisions[k] - tap.bars[k]) / 1e6 for k in keys])
    keys = [k for k in keys if all(k in stage for stage in stages)]
    hops = [np.array([(b[k] - a[k]) / 1e6 for k in keys]) for a, b in zip(stages, stages[1:], strict=False)]
    return total, hops if keys else []


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


def raw_baseline(n_latency: int, n_throughput: int, tick_s: float, folder: Path) -> tuple[np.ndarray, float]:
    """Latency (ms) of frames sent two at a time every ``tick_s``, and frames/s of a burst, through ``HOPS``
    forwarding processes on ``ipc://`` sockets in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    urls = [f"ipc://{folder}/raw-{i}.sock" for i in range(HOPS + 1)]
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
    for _ in range(n_latency // 2):  # two symbols' bars close together
        began = time.perf_counter_ns()
        pub.send_multipart([b"bar.BTCUSDT", body])
        pub.send_multipart([b"bar.ETHUSDT", body])
        for _ in range(2):
            sub.recv_multipart()
            lat.append((time.perf_counter_ns() - began) / 1e6)
        time.sleep(tick_s)
    burst = time.perf_counter()
    for _ in range(n_throughput):
        pub.send_multipart([b"bar.BTCUSDT", body])
    received = 0
    while received < n_throughput and sub.poll(5_000):
        sub.recv_multipart()
        received += 1
    rate = received / (time.perf_counter() - burst)
    pub.send_multipart([b"stop", b""])
    for w in workers:
        w.join(5)
    pub.close(0)
    sub.close(0)
    ctx.term()
    return np.array(lat), rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-minutes", type=int, default=200,
                        help="market minutes of the latency run (2 symbols, 10 s bars: 12 bars a minute)")
    parser.add_argument("--speed", type=float, default=100.0, help="market speed of the latency run")
    parser.add_argument("--hops", action="store_true", help="also tap every hop and print where the time goes")
    parser.add_argument("--no-replay", action="store_true", help="skip the throughput run")
    parser.add_argument("--floor", action="store_true",
                        help="also time the path alone (the champion only: no LSTM, zero or decoy beside it)")
    parser.add_argument("--lstm-delay-ms", type=int, default=0,
                        help="make the LSTM (the challenger) this much slower: live, no decision waits for it")
    parser.add_argument("--yield-ms", type=int, default=None,
                        help="models.yield_ms of the latency run (default: the configuration's; 0: no model yields)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        ids = train_models(root / "registry", INTERVAL)
        replay_ids = train_models(root / "registry-1s", REPLAY_INTERVAL)  # its own roles: RF champion too
        print(f"trained {', '.join(ids)} at 10 s and 1 s in {time.perf_counter() - began:.1f} s")
        config = stack_config(root / "lat", root / "registry", ids, synthetic_market(args.latency_minutes, args.speed),
                              "wall", args.lstm_delay_ms, yield_ms=args.yield_ms)
        lat, hops = latencies_ms(run_stack(config, root / "lat", args.hops))
        raw_lat, raw_rate = raw_baseline(600, 20_000, INTERVAL / 1000 / args.speed, root / "raw")
        report_latency(lat, hops, raw_lat)
        if args.floor:
            report_floor(root, ids, args)
        if args.no_replay:
            return
        config = stack_config(root / "tp", root / "registry-1s", replay_ids, real_replay())
        tap = run_stack(config, root / "tp")
    first, last = min(tap.bars.values()), max(tap.decisions.values())
    bars_per_s = len(tap.decisions) / ((last - first) / 1e9)
    print(f"full-speed replay of the real trades at 1 s bars, whole stack: {len(tap.decisions)} bars at "
          f"{bars_per_s:,.0f} bars/s (target >= 1,000: {'met' if bars_per_s >= 1000 else 'NOT met'}); raw zmq "
          f"{raw_rate:,.0f} frames/s; stack / raw x{bars_per_s / raw_rate:.3f}")
    warm_up = default_feature_set(REPLAY_INTERVAL).warmup
    for symbol in ("BTCUSDT", "ETHUSDT"):
        order = sorted(k for k in tap.decisions if k[0] == symbol)
        late = [i for i, k in enumerate(order) if i >= warm_up - 1 and k not in tap.predicted]
        print(f"  replay {symbol}: {len(order)} bars decided; without a prediction: the first {warm_up - 1} "
              f"(feature warm-up) and {len(late)} more")


def report_latency(lat: np.ndarray, hops: list[np.ndarray], raw_lat: np.ndarray) -> None:
    p50, p99 = np.percentile(lat, [50, 99])
    r50, r99 = np.percentile(raw_lat, [50, 99])
    met = p50 <= 2 and p99 <= 10
    print(f"bar -> decision (RF + LSTM + zero in parallel), {len(lat)} bars: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(target p50 <= 2 ms, p99 <= 10 ms: {'met' if met else 'NOT met'}); raw zmq through {HOPS} forwarding "
          f"processes, paced as the stack: p50 {r50:.3f} ms, p99 {r99:.3f} ms; stack / raw: p50 x{p50 / r50:.1f}, p99 x{p99 / r99:.1f}")
    for name, hop in zip(HOP_NAMES, hops, strict=False):  # with --hops only
        h50, h99 = np.percentile(hop, [50, 99])
        print(f"  hop {name:<26} p50 {h50:6.3f} ms  p99 {h99:6.3f} ms")


def report_floor(root: Path, ids: dict[str, str], args: argparse.Namespace) -> None:
    """The same latency run with nothing beside the path: collector, featurizer, the champion's service,
    rendezvous and trader. What this machine's five process hops cost before any parallel model competes."""
    config = stack_config(root / "floor", root / "registry", {"random_forest": ids["random_forest"]},
                          synthetic_market(args.latency_minutes, args.speed), "wall", decoy=False)
    lat, _ = latencies_ms(run_stack(config, root / "floor"))
    p50, p99 = np.percentile(lat, [50, 99])
    print(f"  the path alone (RF only, no LSTM, zero or decoy), {len(lat)} bars: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
