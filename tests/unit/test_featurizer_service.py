"""The featurizer service: context bars aligned by open time whatever the arrival order, warm-up from the store."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from dope.bars import bars_from_frame
from dope.config import FeaturizerConfig
from dope.features import compute_features, default_feature_set
from dope.features.align import ContextAligner
from dope.market.synthetic import generate_bars
from dope.messages import AnyMessage, Bar, Features
from dope.services.featurizer import FeaturizerService
from dope.store import BarStore
from dope.transport import InMemoryBus
from tests.unit.test_services import drain, run_service

IV = 10_000
START = 1_704_067_200_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
N = 200


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    frames = generate_bars(list(SYMBOLS), START, START + N * IV, IV, seed=5)
    frames["BTCUSDT"] = frames["BTCUSDT"].drop(index=[150, 151, 170]).reset_index(drop=True)  # feed gaps
    return frames


def offline(frames: dict[str, pd.DataFrame], context: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    fs = default_feature_set(IV, context)
    return {s: compute_features(frames[s], fs, {c: frames[c] for c in context}) for s in SYMBOLS}


def shuffled_feed(frames: dict[str, pd.DataFrame], seed: int) -> list[AnyMessage]:
    """Every bar, by open time, the symbols of each open time in a random order."""
    rng = random.Random(seed)
    by_time: dict[int, list[Bar]] = {}
    for symbol in SYMBOLS:
        for bar in bars_from_frame(frames[symbol], IV):
            by_time.setdefault(bar.open_time, []).append(bar)
    feed: list[AnyMessage] = []
    for t in sorted(by_time):
        rng.shuffle(by_time[t])
        feed += by_time[t]
    return feed


def run_featurizer(feed: list[AnyMessage], context: tuple[str, ...], store: BarStore | None = None,
                   wait_bars: int = 1) -> tuple[FeaturizerService, list[Features]]:
    bus = InMemoryBus(hwm=100_000)
    out = bus.subscriber(["features."])
    service = FeaturizerService("featurizer", bus.publisher("featurizer"), [bus.subscriber(["bar."])],
                                default_feature_set(IV, context), list(SYMBOLS), catch_up=False, store=store,
                                settings=FeaturizerConfig(context_wait_bars=wait_bars))
    run_service(service, feed, bus, lambda: service.counters["handled"] >= len(feed))
    return service, [m for m in drain(out) if isinstance(m, Features)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_context_features_do_not_depend_on_the_arrival_order(frames: dict[str, pd.DataFrame], seed: int) -> None:
    context = ("BTCUSDT",)
    want = offline(frames, context)
    service, got = run_featurizer(shuffled_feed(frames, seed), context)
    names = list(default_feature_set(IV, context).names)
    for symbol in SYMBOLS:
        mine = [v for v in got if v.symbol == symbol]
        assert [v.open_time for v in mine] == want[symbol]["open_time"].tolist()
        np.testing.assert_array_equal(np.array([v.values for v in mine]), want[symbol][names].to_numpy())
    counters = service.heartbeat_counters()
    assert counters["context_missing"] == 3 and counters["context_held"] == 0  # ETH bars at BTC's 3 gaps


def test_a_context_bar_later_than_the_deadline_is_missing_as_offline() -> None:
    bars = {s: bars_from_frame(generate_bars([s], START, START + 3 * IV, IV, seed=2)[s], IV) for s in SYMBOLS}
    aligner = ContextAligner(["ETHUSDT"], ("BTCUSDT",), IV, wait_bars=1)
    assert aligner.add(bars["ETHUSDT"][0]) == [] and aligner.held() == 1
    [(bar, context)] = aligner.add(bars["ETHUSDT"][1])  # a bar one interval newer: the deadline
    assert (bar.open_time, context, aligner.context_timeouts, aligner.held()) == (START, {}, 1, 1)
    [(bar, context)] = aligner.add(bars["BTCUSDT"][1])
    assert bar.open_time == START + IV and context == {"BTCUSDT": bars["BTCUSDT"][1]}


def test_the_featurizer_warms_up_from_the_store(frames: dict[str, pd.DataFrame], tmp_path: object) -> None:
    store = BarStore(f"{tmp_path}/store")
    fs = default_feature_set(IV)
    history = {s: frames[s].iloc[:fs.warmup + 5] for s in SYMBOLS}
    for frame in history.values():
        store.write_bars(frame, IV)
    live = [b for s in SYMBOLS for b in bars_from_frame(frames[s].iloc[fs.warmup + 3:fs.warmup + 10], IV)]
    service, got = run_featurizer(live, ())
    assert got == []  # without the store: still warming up
    service, got = run_featurizer(live, (), store=store)
    want = offline(frames, ())
    for symbol in SYMBOLS:
        first_live = int(frames[symbol]["open_time"].iloc[fs.warmup + 5])
        mine = [v for v in got if v.symbol == symbol]
        assert mine[0].open_time == first_live  # the first live bar after the stored ones has its features
        expected = want[symbol].set_index("open_time").loc[[v.open_time for v in mine], list(fs.names)]
        np.testing.assert_array_equal(np.array([v.values for v in mine]), expected.to_numpy())
    counters = service.heartbeat_counters()
    assert counters["store_bars"] == 2 * fs.warmup and counters["already_warm"] == 2 * 2
    assert counters["features"] == 2 * 5
