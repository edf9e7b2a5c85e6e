"""Lineage: the decoy's archive of scores, predictions, decisions and fills, and ``dope lineage`` on it.

The small world here is real but in one process: bars in the store, the online featurizer's vectors,
two registered models scoring them, the rendezvous core choosing, the live trader core deciding and
journaling, the decoy archiving what they published. The whole stack over ZeroMQ is
``tests/e2e/test_lineage_e2e.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from dope.cli import main as dope_main
from dope.clock import SimulatedClock
from dope.commands.lineage import sources_of
from dope.config import DopeConfig, config_from_dict
from dope.features import OnlineFeaturizer, default_feature_set, training_matrix
from dope.loop.lineage import LineageError, Sources, lineage
from dope.market.synthetic import generate_bars
from dope.messages import AnyMessage, Bar, Decision, Features, Fill, Prediction, Score, encode
from dope.models import make_model
from dope.models.registry import Registry
from dope.rendezvous import Rendezvous, Roles
from dope.rendezvous.archive import FeatureArchive
from dope.rendezvous.config import RendezvousConfig
from dope.rendezvous.records import ArchivedMessage, LiveArchive, MessageArchive
from dope.services.decoy import DecoyService
from dope.services.rendezvous import shadow_rule
from dope.services.trader import journal_path
from dope.store import BarStore, CorruptFileError
from dope.trading.journal import Journal
from dope.trading.live import SymbolTrader
from dope.transport import InMemoryBus
from tests.unit.test_services import INTERVAL, START, register_models

SYMBOL = "BTCUSDT"
N_BARS = 300  # the warm-up (121 bars) and some 180 decided bars


def config_of(tmp_path: Path) -> DopeConfig:
    return config_from_dict({
        "store": {"path": str(tmp_path / "store")}, "registry": {"path": str(tmp_path / "registry")},
        "bars": {"interval": "10s"},
        "trader": {"upper": 0.0004, "lower": 0.0004, "allow_short": True, "state_dir": str(tmp_path / "trader"),
                   "journal_fsync": False},  # about the ridge's median prediction here: many trades
    })


# ---- the archive -----------------------------------------------------------------------------------

def score(open_time: int, model_id: str = "rf", prediction: float = 0.001, abstained: str = "") -> Score:
    return Score(symbol=SYMBOL, event_time=open_time + 9_999, open_time=open_time, model_id=model_id,
                 model_kind="random_forest", feature_version="v1", prediction=prediction, latency_us=80,
                 abstained=abstained, seq=3, source="model-rf")


def decided(open_time: int) -> list[ArchivedMessage]:
    """A prediction, a decision and a fill of one bar, every field set."""
    return [Prediction(symbol=SYMBOL, event_time=open_time + 9_999, open_time=open_time, prediction=None,
                       model_id="", chosen_by="none", deadline_ms=50, answered=[], missed=["rf"],
                       latencies_us={}, roles={"rf": "champion"}),
            Decision(symbol=SYMBOL, event_time=open_time + 9_999, open_time=open_time, prediction=None,
                     action="hold", target_position=0, reason="no prediction (none)"),
            Fill(symbol=SYMBOL, event_time=open_time + 19_999, client_order_id=f"paper-{SYMBOL}-{open_time}-open",
                 side="BUY", qty=0.5, price=60_000.0, fee=30.0, fee_asset="quote")]


def test_archive_round_trips_every_kind_bit_for_bit_across_days(tmp_path: Path) -> None:
    archive = MessageArchive(tmp_path)
    midnight = 1_723_161_600_000
    times = [midnight - 10_000, midnight, midnight + 10_000]
    messages: list[ArchivedMessage] = [m for t in times for m in
                [score(t, "rf", math.pi * t), score(t, "lstm", math.nan, "warmup"), *decided(t)]]
    assert archive.write(reversed(messages)) == len(messages)
    for kind, cls in (("score", Score), ("prediction", Prediction), ("decision", Decision), ("fill", Fill)):
        back = archive.read(kind, SYMBOL)
        expected = sorted((m for m in messages if isinstance(m, cls)), key=lambda m: (m.event_time, str(m)))
        assert sorted(encode(m) for m in back) == sorted(encode(m) for m in expected), kind
    assert len(list((tmp_path / "live" / "score" / SYMBOL).glob("date=*/part-*.parquet"))) == 2
    assert [s.open_time for s in archive.read("score", SYMBOL, midnight, midnight + 10_000)] == [midnight] * 2
    assert math.isnan(archive.read("score", SYMBOL, times[0], times[0] + 1)[0].prediction)  # lstm sorts first


def test_archive_writes_append_and_the_last_write_of_a_key_is_read(tmp_path: Path) -> None:
    archive = MessageArchive(tmp_path)
    assert archive.write([score(0), score(0, "zero", 0.0)]) == 2
    assert archive.write([score(0)]) == 1  # the same message again: read back once
    assert [(s.model_id, s.prediction) for s in archive.read("score", SYMBOL)] == [("rf", 0.001), ("zero", 0.0)]
    assert archive.write([score(0, prediction=0.002)]) == 1  # a re-published score replaces the stored one
    assert [(s.model_id, s.prediction) for s in archive.read("score", SYMBOL)] == [("rf", 0.002), ("zero", 0.0)]
    assert [p.name for p in archive.day_files("score", SYMBOL, 0)] == [
        "part-000001.parquet", "part-000002.parquet", "part-000003.parquet"]  # none rewritten


def test_a_message_day_written_as_one_file_by_dope_0_1_is_read_before_its_new_parts(tmp_path: Path) -> None:
    archive = MessageArchive(tmp_path)
    archive.write([score(0), score(0, "zero", 0.0)])
    day = archive.day_folder("score", SYMBOL, 0)
    (day / "part-000001.parquet").rename(day / "score.parquet")
    archive.write([score(0, prediction=0.003)])
    assert [p.name for p in archive.day_files("score", SYMBOL, 0)] == ["score.parquet", "part-000001.parquet"]
    assert [(s.model_id, s.prediction) for s in archive.read("score", SYMBOL)] == [("rf", 0.003), ("zero", 0.0)]


def test_a_corrupt_archive_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    archive = MessageArchive(tmp_path)
    archive.write([score(0)])
    path = archive.day_files("score", SYMBOL, 0)[0]
    path.write_bytes(b"not parquet")
    with pytest.raises(CorruptFileError, match=str(path)):
        archive.read("score", SYMBOL)


def vec(open_time: int) -> Features:
    return Features(symbol=SYMBOL, event_time=open_time + 9_999, open_time=open_time, feature_set="default",
                    feature_version="v1", values=[0.5, math.nan])


def test_the_decoy_archives_scores_predictions_decisions_and_fills(tmp_path: Path) -> None:
    bus = InMemoryBus()
    published = [vec(0), score(0), score(0, "zero", 0.0), *decided(0), vec(10_000), score(10_000)]
    decoy = DecoyService("decoy", bus.publisher("decoy"),
                         [bus.subscriber(["features.", "score.", "prediction.", "decision.", "fill."])],
                         LiveArchive(tmp_path), flush_every=2, clock=SimulatedClock(0))
    upstream = bus.publisher("upstream")
    received = bus.subscriber(["features.", "score.", "prediction.", "decision.", "fill."])
    for msg in published:
        upstream.publish(msg)
    seen = [received.receive(0) for _ in published]

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(decoy.run(stop))
        while decoy.counters["archived"] + len(decoy.pending) < len(published):
            await asyncio.sleep(0.001)
        assert decoy.counters["flushes"] == 1 and len(decoy.pending) == 1  # a batch is 2 vectors and their company
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    decoy.close()
    archive = MessageArchive(tmp_path)
    back = [m for kind in ("score", "prediction", "decision", "fill") for m in archive.read(kind, SYMBOL)]
    back += FeatureArchive(tmp_path).read("default", SYMBOL)
    assert sorted(encode(m) for m in back) == sorted(encode(m) for m in seen if m is not None)
    assert decoy.counters["archived"] == len(published)


def test_a_prediction_names_the_roles_in_force_when_its_round_opened() -> None:
    clock = SimulatedClock(0)
    rv = Rendezvous(RendezvousConfig(deadline_ms=50), Roles("rf", ("lstm",), ("gbm",), ("zero",)), clock,
                    rule=shadow_rule(config_from_dict({}).trader))
    rv.open_round(Features(symbol=SYMBOL, event_time=9, open_time=0, feature_set="f", feature_version="1",
                           values=[1.0]))
    rv.set_roles(Roles("lstm"))  # a promotion while the round is open: it keeps the roles it opened with
    clock.advance_to(50)
    (pred,) = rv.due(50)
    assert pred.roles == {"rf": "champion", "lstm": "challenger", "zero": "canary", "gbm": "shadow"}


# ---- a small world: the store, the archive, the journal, the registry ---------------------------------

@dataclass
class World:
    config: DopeConfig
    ids: dict[str, str]
    bars: list[Bar]
    published: list[AnyMessage]

    @property
    def sources(self) -> Sources:
        return sources_of(self.config)

    def of(self, kind: type[Any], open_time: int) -> list[Any]:
        return [m for m in self.published if isinstance(m, kind) and getattr(m, "open_time", None) == open_time]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Bars stored; vectors, scores (ridge champion, zero canary), predictions, decisions and fills as the
    services publish them, archived; the trader's journal written by the live trader core."""
    tmp_path = tmp_path_factory.mktemp("lineage")
    config = config_of(tmp_path)
    ids = register_models(Path(config.registry.path), {"zero": {}}, roles={"zero": "canary"})
    ids["ridge"] = register_with_lineage(Path(config.registry.path))
    frame = generate_bars([SYMBOL], START, START + N_BARS * INTERVAL, INTERVAL, seed=3)[SYMBOL]
    BarStore(config.store.path).write_bars(frame, INTERVAL)
    from dope.bars import bars_from_frame

    bars = bars_from_frame(frame, INTERVAL)
    published = run_world(config, ids, bars)
    LiveArchive(config.store.path).write(published)
    return World(config, ids, bars, published)


LINEAGE = {"data_start_ms": START - 400 * INTERVAL, "data_end_ms": START, "rows": 279, "data_hash": "sha256:0f0f",
           "parent_id": "ridge-parent", "code_version": "0.1.0+test"}


def register_with_lineage(root: Path) -> str:
    """The champion, registered with lineage fields in its metadata (as the loop's trainer writes them)."""
    fs = default_feature_set(INTERVAL)
    frame = generate_bars([SYMBOL], START - 400 * INTERVAL, START, INTERVAL, seed=11)[SYMBOL]
    X, y, _ = training_matrix(frame, fs, 1)
    registry = Registry(root)
    model_id = registry.register(make_model("ridge").fit(X, y), feature_set=fs, symbol=SYMBOL, interval_ms=INTERVAL,
                                 train_start_ms=START - 400 * INTERVAL, train_end_ms=START, extra=LINEAGE)
    registry.promote(model_id, "champion")
    return model_id


def run_world(config: DopeConfig, ids: dict[str, str], bars: list[Bar]) -> list[AnyMessage]:
    fs = default_feature_set(INTERVAL)
    featurizer = OnlineFeaturizer(fs, SYMBOL)
    registry = Registry(config.registry.path)
    models = {mid: registry.load(mid)[0] for mid in ids.values()}
    clock = SimulatedClock(0)
    rv = Rendezvous(RendezvousConfig(), Roles(ids["ridge"], canaries=(ids["zero"],)), clock,
                    rule=shadow_rule(config.trader), event_deadlines=True)
    with Journal(journal_path(config.trader, config.trader.service_name), fsync=False) as journal:
        trader = SymbolTrader(SYMBOL, config.trader, None, journal=journal)
        out: list[AnyMessage] = []
        for bar in bars:
            out += trader.on_bar(bar, 0)
            vec = featurizer.update(bar)
            if vec is None:
                continue
            rv.open_round(vec)
            out.append(vec)
            for mid, model in models.items():
                sc = Score(symbol=SYMBOL, event_time=vec.event_time, open_time=vec.open_time, model_id=mid,
                           model_kind=model.kind, feature_version=vec.feature_version,
                           prediction=float(model.predict_one(np.asarray(vec.values))), latency_us=7)
                rv.add_score(sc)
                out.append(sc)
            for pred in rv.due(0):
                out.append(pred)
                out += trader.on_prediction(pred, 0)
    return out


def trades(world: World) -> list[Decision]:
    return [m for m in world.published if isinstance(m, Decision) and m.action != "hold"]


def test_lineage_reconstructs_and_reproduces_decisions(world: World) -> None:
    assert len(trades(world)) >= 3
    for decision in trades(world)[:3]:
        found = lineage(world.sources, SYMBOL, decision.open_time + 1234)  # any time inside the bar
        assert found["open_time"] == decision.open_time
        (vec,) = world.of(Features, decision.open_time)
        assert found["features"]["values"] == vec.values and found["features"]["names"][0]
        live = {s.model_id: s for s in world.of(Score, decision.open_time)}
        assert {r["model_id"]: r["prediction"] for r in found["scores"]} == {m: s.prediction for m, s in live.items()}
        assert {r["model_id"]: r["role"] for r in found["scores"]} == {world.ids["ridge"]: "champion",
                                                                        world.ids["zero"]: "canary"}
        (pred,) = world.of(Prediction, decision.open_time)
        assert found["chosen"]["model_id"] == pred.model_id == world.ids["ridge"]
        assert found["chosen"]["chosen_by"] == "champion" and "champion" in found["chosen"]["why"]
        assert found["decision"]["action"] == decision.action
        assert found["decision"]["target_position"] == decision.target_position
        assert found["model"]["model_id"] == pred.model_id and found["model"]["kind"] == "ridge"
        assert found["model"]["data"]["train_end_ms"] == START and found["model"]["role"] == "champion"
        assert {k: found["model"][k] for k in LINEAGE} == LINEAGE  # whatever metadata.json holds
        assert found["reproduced"] == {**found["reproduced"], "features": True, "scores": True, "decision": True}
        assert found["reproduced"]["features_max_abs_diff"] <= 1e-12


def test_lineage_finds_the_fill_in_the_archive_and_the_journal(world: World) -> None:
    decision = trades(world)[0]
    found = lineage(world.sources, SYMBOL, decision.open_time)
    fills = [f for f in world.published if isinstance(f, Fill)]
    assert found["fill"] is not None and len(found["fill"]) >= 1
    assert all(f["journaled"] and f["archived"] for f in found["fill"])
    assert {f["client_order_id"] for f in found["fill"]} <= {f.client_order_id for f in fills}
    assert found["fill"][0]["side"] == ("BUY" if decision.action == "buy" else "SELL")
    holds = [d for d in world.published if isinstance(d, Decision) and d.action == "hold" and d.prediction is not None]
    assert lineage(world.sources, SYMBOL, holds[-1].open_time)["fill"] is None


def test_lineage_reports_a_tampered_score_and_decision_as_not_reproduced(world: World, tmp_path: Path) -> None:
    import shutil

    config = msgspec.structs.replace(world.config, store=msgspec.structs.replace(world.config.store,
                                                                                  path=str(tmp_path / "store")))
    shutil.copytree(world.config.store.path, config.store.path)
    decision = trades(world)[1]
    (champion,) = [s for s in world.of(Score, decision.open_time) if s.model_id == world.ids["ridge"]]
    other = "sell" if decision.action == "buy" else "buy"
    MessageArchive(config.store.path).write([
        msgspec.structs.replace(champion, prediction=champion.prediction + 1e-9),
        msgspec.structs.replace(decision, action=other)])
    found = lineage(sources_of(config), SYMBOL, decision.open_time)
    assert found["reproduced"]["scores"] is False and found["reproduced"]["decision"] is False
    assert found["reproduced"]["features"] is True


def test_lineage_names_what_is_missing(world: World, tmp_path: Path) -> None:
    empty = sources_of(config_of(tmp_path))
    with pytest.raises(LineageError, match="no bar in the store.*no archived feature vector.*no archived prediction"):
        lineage(empty, SYMBOL, START)
    with pytest.raises(LineageError, match=r"2024-01-01T00:00:00.000Z \(open time 1704067200000\): "
                                           "no archived feature vector"):
        lineage(world.sources, SYMBOL, START)  # a bar of the warm-up: stored, but no vector was published
    with pytest.raises(LineageError, match="no bar in the store"):
        lineage(world.sources, "ETHUSDT", world.bars[-1].open_time)


def test_dope_lineage_json_and_errors(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomli_w

    path = tmp_path / "dope.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(world.config)))
    decision = trades(world)[0]
    from dope.timeparse import iso_of

    assert dope_main(["lineage", "--config", str(path), "--symbol", SYMBOL, "--time", iso_of(decision.open_time),
                      "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {"bar", "features", "scores", "chosen", "decision", "fill", "model"} <= found.keys()
    assert found["decision"]["action"] == decision.action
    assert dope_main(["lineage", "--config", str(path), "--symbol", SYMBOL, "--time", str(decision.open_time)]) == 0
    text = capsys.readouterr().out
    assert "reproduced: features True, scores True, decision True" in text and world.ids["ridge"] in text
    assert "train_end 2024-01-01T00:00:00Z" in text and "parent_id ridge-parent" in text
    assert dope_main(["lineage", "--config", str(path), "--symbol", SYMBOL, "--time", "2020-01-01"]) == 2
    assert "no bar in the store" in capsys.readouterr().err


def test_dope_lineage_names_a_corrupt_archive_file(world: World, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    import tomli_w

    store = tmp_path / "store"
    shutil.copytree(world.config.store.path, store)
    decision = trades(world)[0]
    broken = MessageArchive(store).day_files("prediction", SYMBOL, decision.open_time)[-1]
    broken.write_bytes(broken.read_bytes()[:40])
    path = tmp_path / "dope.toml"
    path.write_text(tomli_w.dumps(msgspec.to_builtins(world.config)))
    assert dope_main(["lineage", "--config", str(path), "--store", str(store), "--symbol", SYMBOL,
                      "--time", str(decision.open_time)]) == 2
    assert f"corrupt archive file {broken}" in capsys.readouterr().err


def test_lineage_without_the_model_in_the_registry_still_shows_the_decision(world: World, tmp_path: Path) -> None:
    import shutil

    registry = tmp_path / "registry"
    shutil.copytree(world.config.registry.path, registry)
    shutil.rmtree(registry / world.ids["ridge"])
    decision = trades(world)[0]
    found = lineage(sources_of(world.config, registry=str(registry)), SYMBOL, decision.open_time)
    assert found["model"]["model_id"] == world.ids["ridge"] and "error" in found["model"]
    rows = {r["model_id"]: r for r in found["scores"]}
    assert rows[world.ids["ridge"]]["reproduced"] is False
    assert "cannot load the model" in rows[world.ids["ridge"]]["reproduced_detail"]
    assert rows[world.ids["zero"]]["reproduced"] is True
    assert found["reproduced"]["scores"] is False and found["reproduced"]["decision"] is True


def test_the_archive_names_every_model_a_decision_needs(world: World) -> None:
    assert MessageArchive(world.config.store.path).referenced_models() == set(world.ids.values())


@pytest.mark.slow
def test_lineage_rescores_a_sequence_model_on_its_window_of_archived_vectors(tmp_path: Path) -> None:
    """An LSTM (lookback 4) served by the real model service: its warm-up abstentions and its scores come
    out the same from the archived vectors."""
    from dope.services.model import ModelService
    from tests.unit.test_services import drain, run_service

    config = config_of(tmp_path)
    ids = register_models(Path(config.registry.path), {"lstm": {"lookback": 4, "units": 4, "epochs": 1}},
                          roles={"lstm": "shadow"})
    fs = default_feature_set(INTERVAL)
    frame = generate_bars([SYMBOL], START, START + (fs.warmup + 12) * INTERVAL, INTERVAL, seed=3)[SYMBOL]
    BarStore(config.store.path).write_bars(frame, INTERVAL)
    from dope.bars import bars_from_frame

    featurizer = OnlineFeaturizer(fs, SYMBOL)
    vectors = [v for v in map(featurizer.update, bars_from_frame(frame, INTERVAL)) if v is not None]
    bus = InMemoryBus(hwm=10_000)
    out = bus.subscriber(["score."])
    service = ModelService("model", bus.publisher("model"), [bus.subscriber(["features."])],
                           Registry(config.registry.path), ids["lstm"], fs.version)
    run_service(service, list(vectors), bus, lambda: service.counters["handled"] >= len(vectors))
    scores = [m for m in drain(out) if isinstance(m, Score)]
    rv = Rendezvous(RendezvousConfig(), Roles(shadows=(ids["lstm"],)), SimulatedClock(0),
                    rule=shadow_rule(config.trader), event_deadlines=True)
    predictions: list[AnyMessage] = []
    for vec, sc in zip(vectors, scores, strict=True):
        rv.open_round(vec)
        rv.add_score(sc)
        predictions += rv.due(0)
    LiveArchive(config.store.path).write([*vectors, *scores, *predictions])
    assert [s.abstained for s in scores[:4]] == ["warmup"] * 3 + [""]
    for k in (1, 3, 8):
        (row,) = lineage(sources_of(config), SYMBOL, vectors[k].open_time)["scores"]
        assert (row["role"], row["status"], row["reproduced"]) == ("shadow", "abstained" if k < 3 else
                                                                   "answered", True), row
        assert row["reproduced_abstained"] == scores[k].abstained
        if k >= 3:
            assert row["reproduced_prediction"] == scores[k].prediction


def test_an_answered_score_missing_from_the_archive_is_not_reproduced(world: World, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(world.config.store.path, store)
    decision = trades(world)[0]
    archive = MessageArchive(store)
    keep = [s for s in archive.read("score", SYMBOL)
            if (s.open_time, s.model_id) != (decision.open_time, world.ids["zero"])]
    for path in archive.day_files("score", SYMBOL, decision.open_time):
        path.unlink()
    archive.write(keep)
    found = lineage(sources_of(world.config, store=str(store)), SYMBOL, decision.open_time)
    rows = {r["model_id"]: r for r in found["scores"]}
    assert (rows[world.ids["zero"]]["archived"], rows[world.ids["zero"]]["status"]) == (False, "answered")
    assert rows[world.ids["ridge"]]["reproduced"] is True and found["reproduced"]["scores"] is False


def test_a_live_prediction_decided_before_a_score_came_shows_it_as_after_the_decision(world: World,
                                                                                       tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(world.config.store.path, store)
    decision = trades(world)[0]
    archive = MessageArchive(store)
    ridge, zero = world.ids["ridge"], world.ids["zero"]
    predictions = archive.read("prediction", SYMBOL)
    early = [p if p.open_time != decision.open_time else msgspec.structs.replace(
        p, answered=[m for m in p.answered if m not in (ridge, zero)], pending=[ridge, zero]) for p in predictions]
    for path in archive.day_files("prediction", SYMBOL, decision.open_time):
        path.unlink()
    archive.write(early)
    scores = [s for s in archive.read("score", SYMBOL) if (s.open_time, s.model_id) != (decision.open_time, zero)]
    for path in archive.day_files("score", SYMBOL, decision.open_time):
        path.unlink()
    archive.write(scores)
    rows = {r["model_id"]: r for r in lineage(sources_of(world.config, store=str(store)), SYMBOL,
                                              decision.open_time)["scores"]}
    assert (rows[ridge]["status"], rows[ridge]["reproduced"]) == ("after the decision", True)
    assert (rows[zero]["status"], rows[zero]["archived"]) == ("awaited at the decision", False)
