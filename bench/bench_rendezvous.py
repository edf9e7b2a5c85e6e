"""The rendezvous' own share of the latency: one round (features, four scores, close, bar) through the core.

Each round opens a round, adds the scores of a champion, a challenger, a shadow and a canary,
closes it (policy, provenance, scorecards, canary divergence) and adds the bar that realises
the previous round's return. Per-round wall times give p50/p99. The baseline does the same
rounds as bare dict inserts and lookups (open: insert; score: set; close: pop and pick), in the
same run; the ratio says what the policy and the scorecards cost on top. Both are timed in wall
time and in CPU time of the thread (``time.thread_time_ns``): on a busy machine the wall p99 is
the scheduler's (a round preempted by another process), the CPU p99 the rendezvous' own.
Scorecard snapshots (published every ``publish_every`` rounds) are timed separately.

    .venv/bin/python -m bench.bench_rendezvous [--rounds 20000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from dope.clock import SimulatedClock
from dope.config import RendezvousConfig, TraderConfig
from dope.messages import Bar, Features, Score
from dope.rendezvous import Rendezvous, Roles
from dope.services.rendezvous import shadow_rule

MODELS = ("rf", "gbm", "lstm", "zero")
ROLES = Roles(champion="rf", challengers=("gbm",), shadows=("lstm",), canaries=("zero",))
SYMBOLS = ("BTCUSDT", "ETHUSDT")
IV = 10_000


def make_inputs(rounds: int) -> list[tuple[Features, list[Score], Bar]]:
    """Every round's messages, built before timing."""
    rng = np.random.default_rng(0)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, rounds)))
    out = []
    for i in range(rounds):
        symbol, t = SYMBOLS[i % 2], (i // 2) * IV
        feats = Features(symbol=symbol, event_time=t + IV - 1, open_time=t, feature_set="default",
                         feature_version="v1", values=rng.normal(size=12).tolist(), seq=i + 1, source="f")
        scores = [Score(symbol=symbol, event_time=t + IV - 1, open_time=t, model_id=m, model_kind=m,
                        feature_version="v1", prediction=float(rng.normal(0, 0.001)), latency_us=200)
                  for m in MODELS]
        price = float(closes[i])
        bar = Bar(symbol=symbol, event_time=t + IV - 1, interval_ms=IV, open_time=t, close_time=t + IV - 1,
                  open=price, high=price, low=price, close=price, volume=1.0, quote_volume=price, count=1,
                  taker_buy_volume=0.5, taker_buy_quote_volume=price / 2, vwap=price, empty=False,
                  first_trade_id=i, last_trade_id=i)
        out.append((feats, scores, bar))
    return out


Timer = Callable[[], int]


def time_core(inputs: list[tuple[Features, list[Score], Bar]], timer: Timer = time.perf_counter_ns) -> np.ndarray:
    """Per-round nanoseconds through the rendezvous core."""
    clock = SimulatedClock(0)
    rv = Rendezvous(RendezvousConfig(deadline_ms=50), ROLES, clock, rule=shadow_rule(TraderConfig()))
    times = np.empty(len(inputs), dtype=np.int64)
    for i, (feats, scores, bar) in enumerate(inputs):
        clock.advance_to(i)
        start = timer()
        rv.add_bar(bar)
        rv.open_round(feats)
        for score in scores:
            rv.add_score(score)
        predictions = rv.due(clock.now_ms())
        times[i] = timer() - start
        assert len(predictions) == 1 and predictions[0].chosen_by == "champion"
    return times


def time_baseline(inputs: list[tuple[Features, list[Score], Bar]], timer: Timer = time.perf_counter_ns
                  ) -> np.ndarray:
    """Per-round nanoseconds of the same rounds as bare dict operations."""
    rounds: dict[tuple[str, int], dict[str, float]] = {}
    closes: dict[tuple[str, int], float] = {}
    times = np.empty(len(inputs), dtype=np.int64)
    for i, (feats, scores, bar) in enumerate(inputs):
        start = timer()
        closes[(bar.symbol, bar.open_time)] = bar.close
        key = (feats.symbol, feats.open_time)
        rounds[key] = {}
        for score in scores:
            rounds[(score.symbol, score.open_time)][score.model_id] = score.prediction
        answers = rounds.pop(key)
        chosen = answers.get("rf")
        times[i] = timer() - start
        assert chosen is not None
    return times


def time_snapshots(inputs: list[tuple[Features, list[Score], Bar]], repeat: int = 50) -> float:
    """Seconds to build every scorecard message once (after all rounds)."""
    rv = Rendezvous(RendezvousConfig(deadline_ms=50), ROLES, SimulatedClock(0), rule=shadow_rule(TraderConfig()))
    for feats, scores, bar in inputs:
        rv.add_bar(bar)
        rv.open_round(feats)
        for score in scores:
            rv.add_score(score)
        rv.due(0)
    start = time.thread_time()
    for _ in range(repeat):
        cards = rv.scorecards()
    assert len(cards) == len(MODELS) * len(SYMBOLS)
    return (time.thread_time() - start) / repeat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args(argv)
    inputs = make_inputs(args.rounds)
    time_core(inputs[:1000])  # warm-up
    print(f"rounds: {args.rounds}, {len(MODELS)} models, {len(SYMBOLS)} symbols; per round, microseconds")
    for label, timer in (("wall", time.perf_counter_ns), ("cpu", time.thread_time_ns)):
        (c50, c99), (b50, b99) = (np.percentile(t, [50, 99]) / 1000
                                  for t in (time_core(inputs, timer), time_baseline(inputs, timer)))
        print(f"{label:4} rendezvous core  p50 {c50:8.1f}  p99 {c99:8.1f}   (target p99 <= 1000)")
        print(f"{label:4} baseline dict    p50 {b50:8.1f}  p99 {b99:8.1f}")
        print(f"{label:4} ratio core/dict  p50 {c50 / b50:8.1f}x p99 {c99 / b99:8.1f}x")
    snap = time_snapshots(inputs[:5000])
    print(f"cpu  scorecard snapshot of {len(MODELS) * len(SYMBOLS)} cards {snap * 1e6:8.1f} "
          f"(every publish_every rounds: {snap * 1e6 / 10:.1f} per round at the default 10)")


if __name__ == "__main__":
    main()
