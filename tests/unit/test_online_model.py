"""The online model (``online_ridge``): learning one label at a time, never before it is realised, in the model
service exactly as in a replay, and snapshots that resume the state."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dope.features import OnlineFeaturizer, default_feature_set, training_matrix
from dope.market.synthetic import generate_bars
from dope.messages import AnyMessage, Bar, Features, Score
from dope.models import ModelError, make_model
from dope.models.online import OnlineRidgeModel
from dope.models.registry import Registry
from dope.rendezvous.online import OnlineTrack, SnapshotStore, replay
from dope.services.model import ModelService
from dope.transport import InMemoryBus
from tests.unit.test_services import INTERVAL, START, drain, synthetic_bars

HORIZON = 2


def sample(n: int = 300, f: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, closes and open times of ``n`` bars whose returns depend on the rows."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f))
    closes = 100.0 * np.exp(np.cumsum(0.001 * X[:, 0] + 0.001 * rng.standard_normal(n)))
    return X, closes, START + INTERVAL * np.arange(n)


def test_fit_is_learning_the_rows_one_by_one() -> None:
    X, closes, _ = sample()
    y = np.log(closes[1:] / closes[:-1])
    fitted = make_model("online_ridge").fit(X[:-1], y)
    online = OnlineRidgeModel.from_params()
    for row, target in zip(X[:-1], y, strict=True):
        online.learn_one(row, float(target))
    assert isinstance(fitted, OnlineRidgeModel)
    np.testing.assert_array_equal(online.info, fitted.info)
    np.testing.assert_array_equal(online.predict_many(X), fitted.predict_many(X))
    with pytest.raises(ModelError, match="finite"):
        online.learn_one(X[0], math.nan)
    with pytest.raises(ModelError, match="features"):
        online.learn_one(X[0, :2], 0.0)


def test_replay_learns_the_label_of_row_i_exactly_at_bar_i_plus_horizon() -> None:
    X, closes, times = sample()
    model = make_model("online_ridge").fit(X[:50], np.zeros(50))
    got = replay(model, X, closes, times, INTERVAL, HORIZON)
    by_hand, expected = make_model("online_ridge").fit(X[:50], np.zeros(50)), []
    for i in range(len(X)):
        if i >= HORIZON:
            by_hand.learn_one(X[i - HORIZON], math.log(closes[i] / closes[i - HORIZON]))
        expected.append(by_hand.predict_one(X[i]))
    np.testing.assert_array_equal(got, np.array(expected))
    assert model.predict_one(X[0]) == make_model("online_ridge").fit(X[:50], np.zeros(50)).predict_one(X[0])


def test_a_changed_future_never_reaches_an_earlier_prediction() -> None:
    """Truncation: changing the closes from bar k on leaves predictions before k as they were; the prediction
    at k moves (the label of row k - horizon, realised by bar k, is learned just before it)."""
    X, closes, times = sample()
    model = make_model("online_ridge").fit(X[:50], np.zeros(50))
    full = replay(model, X, closes, times, INTERVAL, HORIZON)
    k = 200
    future = closes.copy()
    future[k:] *= 1.05
    changed = replay(model, X, future, times, INTERVAL, HORIZON)
    np.testing.assert_array_equal(changed[:k], full[:k])
    assert changed[k] != full[k]
    np.testing.assert_array_equal(replay(model, X[:k], closes[:k], times[:k], INTERVAL, HORIZON), full[:k])


def test_a_vector_waits_for_its_bar_and_a_withheld_bar_means_no_update() -> None:
    X, closes, times = sample(40)
    model = make_model("online_ridge").fit(X[:10], np.zeros(10))
    track: OnlineTrack[int] = OnlineTrack(make_model("online_ridge").fit(X[:10], np.zeros(10)), "S", HORIZON)
    got: dict[int, float] = {}
    for i in range(30):  # every vector before its own bar: it waits for it, and the result is the replay's
        got.update(track.on_features(int(times[i]), X[i], i))
        assert i not in got
        got.update(track.on_bar(int(times[i]), INTERVAL, float(closes[i])))
    np.testing.assert_array_equal([got[i] for i in range(30)], replay(model, X[:30], closes[:30], times[:30],
                                                                       INTERVAL, HORIZON))
    assert track.learned == 30 - HORIZON
    for i in range(30, 32):  # bars 30 and 31 withheld: rows 28 and 29 never learn, row 30 waits
        got.update(track.on_features(int(times[i]), X[i], i))
    assert track.learned == 30 - HORIZON and 30 not in got


def test_bars_running_ahead_of_the_vectors_change_nothing() -> None:
    """Bars up to 3 ahead of the vectors (the collector is a hop nearer): labels realised by a later bar than a
    vector's own wait, and the predictions are the replay's."""
    X, closes, times = sample(60)
    model = make_model("online_ridge").fit(X[:10], np.zeros(10))
    track: OnlineTrack[int] = OnlineTrack(make_model("online_ridge").fit(X[:10], np.zeros(10)), "S", HORIZON)
    got: dict[int, float] = {}
    for i in range(3):
        track.on_bar(int(times[i]), INTERVAL, float(closes[i]))
    for i in range(57):
        got.update(track.on_bar(int(times[i + 3]), INTERVAL, float(closes[i + 3])))
        got.update(track.on_features(int(times[i]), X[i], i))
    np.testing.assert_array_equal([got[i] for i in range(57)], replay(model, X, closes, times, INTERVAL,
                                                                       HORIZON)[:57])


def online_service(bus: InMemoryBus, root: Path, **kwargs: object) -> tuple[ModelService, str, list[Bar],
                                                                              list[Features]]:
    """A model service serving an online_ridge model; the bars and the vectors that follow its training."""
    fs = default_feature_set(INTERVAL)
    frame = generate_bars(["BTCUSDT"], START - 300 * INTERVAL, START, INTERVAL, seed=11)["BTCUSDT"]
    X, y, _ = training_matrix(frame, fs, HORIZON)
    model_id = Registry(root).register(make_model("online_ridge").fit(X, y), feature_set=fs, symbol="BTCUSDT",
                                       interval_ms=INTERVAL, train_start_ms=int(frame["open_time"].iloc[0]),
                                       train_end_ms=START, extra={"horizon": HORIZON})
    service = ModelService("model", bus.publisher("model"), [bus.subscriber(["features.", "bar."])],
                           Registry(root), model_id, fs.version, **kwargs)  # type: ignore[arg-type]
    featurizer = OnlineFeaturizer(fs, "BTCUSDT")
    bars = synthetic_bars(["BTCUSDT"], fs.warmup + 80)["BTCUSDT"]
    vectors = [featurizer.update(bar) for bar in bars]
    kept = [(b, v) for b, v in zip(bars, vectors, strict=True) if v is not None]
    return service, model_id, [b for b, _ in kept], [v for _, v in kept if v is not None]


def run_feed(service: ModelService, bus: InMemoryBus, feed: list[AnyMessage], scores: int) -> list[Score]:
    upstream, out = bus.publisher("upstream"), bus.subscriber(["score."])

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        for msg in feed:
            upstream.publish(msg)
        for _ in range(500):
            await asyncio.sleep(0.01)
            if service.counters.get("scores", 0) >= scores and service.counters["handled"] >= len(feed):
                break
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    return [m for m in drain(out) if isinstance(m, Score)]


def test_the_service_publishes_the_replay_and_learns_only_realised_labels(tmp_path: Path) -> None:
    bus = InMemoryBus(hwm=10_000)
    service, model_id, bars, vectors = online_service(bus, tmp_path, snapshots=SnapshotStore(tmp_path / "snap"),
                                                      snapshot_every=5)
    feed: list[AnyMessage] = []
    for i, (bar, vector) in enumerate(zip(bars, vectors, strict=True)):  # every third vector before its bar
        feed += [vector, bar] if i % 3 == 0 else [bar, vector]
    withheld = len(bars) - 1
    feed.remove(bars[withheld])  # the last bar never comes: its vector waits until the bus is quiet
    scores = run_feed(service, bus, feed, len(vectors))
    model, _ = Registry(tmp_path).load(model_id)
    X = np.array([v.values for v in vectors])
    expected = replay(model, X, np.array([b.close for b in bars]), np.array([b.open_time for b in bars]),
                      INTERVAL, HORIZON)
    assert [s.open_time for s in scores] == [v.open_time for v in vectors]
    np.testing.assert_array_equal([s.prediction for s in scores[:withheld]], expected[:withheld])
    assert math.isfinite(scores[-1].prediction) and not scores[-1].abstained
    counters = service.heartbeat_counters()
    assert counters["online.learned"] == withheld - HORIZON  # rows whose bar + horizon arrived, no other
    assert counters["online.late"] == 1
    assert counters["online.snapshots"] >= 1 and counters["errors"] == 0


def test_a_restarted_service_resumes_its_snapshot_and_continues_as_if_never_stopped(tmp_path: Path) -> None:
    bus = InMemoryBus(hwm=10_000)
    service, model_id, bars, vectors = online_service(bus, tmp_path, snapshots=SnapshotStore(tmp_path / "snap"))
    half = len(bars) // 2
    first = run_feed(service, bus, [m for pair in zip(bars[:half], vectors[:half], strict=True) for m in pair], half)
    bus2 = InMemoryBus(hwm=10_000)
    again, _, _, _ = online_service(bus2, tmp_path / "other", snapshots=SnapshotStore(tmp_path / "snap"))
    again.target = model_id
    again.registry = Registry(tmp_path)
    rest = run_feed(again, bus2, [m for pair in zip(bars[half:], vectors[half:], strict=True) for m in pair],
                    len(bars) - half)
    model, _ = Registry(tmp_path).load(model_id)
    expected = replay(model, np.array([v.values for v in vectors]), np.array([b.close for b in bars]),
                      np.array([b.open_time for b in bars]), INTERVAL, HORIZON)
    np.testing.assert_array_equal([s.prediction for s in first + rest], expected)
    assert again.heartbeat_counters()["online.resumed"] == 1


def test_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    X, closes, times = sample(20)
    track: OnlineTrack[int] = OnlineTrack(make_model("online_ridge").fit(X[:5], np.zeros(5)), "S", 1)
    for i in range(10):
        track.on_bar(int(times[i]), INTERVAL, float(closes[i]))
        track.on_features(int(times[i]), X[i], i)
    store = SnapshotStore(tmp_path)
    store.save(track, "m-1")
    assert store.load("S", "m-2", lambda m: OnlineTrack(m, "S", 1)) is None  # another model: start afresh
    back = store.load("S", "m-1", lambda m: OnlineTrack(m, "S", 1))
    assert back is not None and back.learned == track.learned and back.rows.keys() == track.rows.keys()
    latest = json.loads((tmp_path / "S" / "latest.json").read_text())
    state = tmp_path / "S" / latest["snapshot"] / "track.json"
    state.write_text(state.read_text().replace('"learned": 9', '"learned": 8'))
    with pytest.raises(ModelError, match="checksum"):
        store.load("S", "m-1", lambda m: OnlineTrack(m, "S", 1))
