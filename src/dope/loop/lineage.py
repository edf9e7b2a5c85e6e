"""Lineage: one live decision reconstructed from what was stored, and reproduced.

For a symbol and a bar, :func:`lineage` gathers

* ``bar``: the bar from the store (:class:`dope.store.BarStore`);
* ``features``: the vector exactly as the models received it (the decoy's
  :class:`~dope.rendezvous.archive.FeatureArchive`);
* ``scores``: every model's archived ``Score`` with its role and latency, and whether the rendezvous
  counted it answered, missed or abstained (:class:`~dope.rendezvous.records.MessageArchive`);
* ``chosen``: the rendezvous' ``Prediction`` with its provenance, and why that model was chosen;
* ``decision`` and ``fill``: the trader's ``Decision`` and the fills of its order (the archive, checked
  against the trader's journal); None where there were none;
* ``model``: the registry metadata of the chosen model (whatever ``metadata.json`` holds);

and ``reproduced``: the features computed again from the stored bars (equal to 1e-12), each model's
score computed again from its lookback window of archived vectors (the model loaded from the registry
with its checksums), and the decision computed again from the chosen prediction by the trader's rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from dope.bars import bars_from_frame
from dope.errors import UserError
from dope.features import FeatureSet, compute_features
from dope.features.featureset import FeatureError
from dope.messages import Bar, Decision, Features, Fill, Prediction, Score
from dope.models.registry import Registry, RegistryError
from dope.models.serving import LoadedModel, vector_problem
from dope.rendezvous.archive import FeatureArchive
from dope.rendezvous.records import MessageArchive
from dope.store import BarStore
from dope.timeparse import iso_of
from dope.trading.binance import client_order_id
from dope.trading.journal import FillRecord, StepRecord, read_journal
from dope.trading.live import action_of, paper_order_id
from dope.trading.strategy import ThresholdStrategy

FEATURE_TOLERANCE: Final = 1e-12
DAY_MS: Final = 86_400_000
LEGS: Final = ("open", "close", "kill")


class LineageError(UserError):
    """Nothing (or not enough) is stored to reconstruct the decision asked for."""


@dataclass(frozen=True)
class Sources:
    """Where the stored pieces of a decision are (the store: bars and archives; the registry; the trader's
    journal) and what the live services ran with (the bar interval, the feature set, the trader's strategy).
    ``dope.commands.lineage.sources_of`` reads them from a configuration."""

    store: Path
    registry: Path
    journal: Path
    interval_ms: int
    feature_set: FeatureSet
    strategy: ThresholdStrategy


def lineage(sources: Sources, symbol: str, time_ms: int) -> dict[str, Any]:
    """The decision of ``symbol`` at the bar holding ``time_ms``, reconstructed and reproduced (JSON-ready)."""
    open_time = time_ms - time_ms % sources.interval_ms
    messages = MessageArchive(sources.store)
    bar = _bar(sources, symbol, open_time)
    vectors = FeatureArchive(sources.store).read(sources.feature_set.name, symbol, open_time, open_time + 1)
    predictions: list[Prediction] = messages.read("prediction", symbol, open_time, open_time + 1)
    _require(sources, symbol, open_time, bar=bar, features=vectors, prediction=predictions)
    assert bar is not None
    prediction = predictions[-1]
    scores: list[Score] = messages.read("score", symbol, open_time, open_time + 1)
    vector = _vector_scored(vectors, scores)
    decisions: list[Decision] = messages.read("decision", symbol, open_time, open_time + 1)
    decision = decisions[-1] if decisions else None
    score_rows = [_score_row(sources, mid, score, prediction, vector)
                  for mid, score in _by_model(prediction, scores).items()]
    decision_row = _decision_row(sources, messages, decision, prediction) if decision is not None else None
    features_check = _features_check(sources, symbol, vector)
    return {
        "symbol": symbol, "open_time": open_time, "time": iso_of(open_time),
        "bar": msgspec.to_builtins(bar),
        "features": {**msgspec.to_builtins(vector), "names": list(sources.feature_set.names)},
        "scores": score_rows,
        "chosen": _chosen(prediction),
        "decision": decision_row,
        "fill": _fills(sources, messages, bar) if decision is not None else None,
        "model": _model(sources, prediction.model_id),
        "reproduced": {
            "features": features_check["equal"], "features_max_abs_diff": features_check["max_abs_diff"],
            "features_detail": features_check["detail"],
            "scores": _scores_reproduced(score_rows),
            "decision": None if decision_row is None else decision_row["reproduced"],
        },
    }


def _scores_reproduced(rows: list[dict[str, Any]]) -> bool | None:
    """True when every archived score came out the same and every model that answered has one archived;
    None when no model scored."""
    if not any(row["archived"] for row in rows):
        return None
    return all(row.get("reproduced", False) for row in rows if row["archived"] or row["status"] == "answered")


def _require(sources: Sources, symbol: str, open_time: int, **found: Any) -> None:
    """A :class:`LineageError` naming every missing piece (``found``: bar, features, prediction)."""
    where = {"bar": f"no bar in the store {sources.store} (interval {sources.interval_ms} ms)",
             "features": f"no archived feature vector ({sources.feature_set.name}) under "
                         f"{FeatureArchive(sources.store).root} (is the decoy running?)",
             "prediction": f"no archived prediction under {MessageArchive(sources.store).root} "
                           "(is the decoy running?)"}
    missing = [where[name] for name, value in found.items() if not value]
    if missing:
        raise LineageError(f"nothing to reconstruct for {symbol} at {iso_of(open_time)} (open time {open_time}): "
                           + "; ".join(missing))


def _bar(sources: Sources, symbol: str, open_time: int) -> Bar | None:
    frame = BarStore(sources.store).read_bars(symbol, sources.interval_ms, open_time, open_time + 1)
    bars = bars_from_frame(frame, sources.interval_ms, symbol)
    return bars[0] if bars else None


def _vector_scored(vectors: list[Features], scores: list[Score]) -> Features:
    """The vector of the version the models scored (the newest when they say nothing)."""
    versions = {s.feature_version for s in scores}
    return next((v for v in reversed(vectors) if v.feature_version in versions), vectors[-1])


def _by_model(prediction: Prediction, scores: list[Score]) -> dict[str, Score | None]:
    """Every model of the round (answered, missed, then any other that scored) with its archived score."""
    archived = {s.model_id: s for s in scores}
    order = [*prediction.answered, *prediction.missed, *prediction.pending, *prediction.roles, *sorted(archived)]
    return {mid: archived.get(mid) for mid in dict.fromkeys(order)}


def _status(model_id: str, score: Score | None, prediction: Prediction) -> str:
    if model_id in prediction.answered:
        return "answered"
    if model_id in prediction.missed:
        return "missed"
    if model_id in prediction.pending and (score is None or not score.abstained):
        return "after the decision" if score is not None else "awaited at the decision"
    if score is not None and score.abstained:
        return "abstained"
    return "not waited for"


def _score_row(sources: Sources, model_id: str, score: Score | None, prediction: Prediction,
               vector: Features) -> dict[str, Any]:
    row: dict[str, Any] = {"model_id": model_id, "role": prediction.roles.get(model_id, ""),
                           "status": _status(model_id, score, prediction), "archived": score is not None}
    if score is None:
        return row
    row.update(model_kind=score.model_kind, prediction=score.prediction, latency_us=score.latency_us,
               abstained=score.abstained, feature_version=score.feature_version)
    again = _score_again(sources, score, vector)
    row["reproduced_prediction"] = again.prediction
    row["reproduced_abstained"] = again.abstained
    row["reproduced"] = again.same_as(score)
    if again.detail:
        row["reproduced_detail"] = again.detail
    return row


@dataclass(frozen=True)
class Rescore:
    """A score computed again: a prediction, or the abstention the model service would publish
    (``warmup``, ``bad_input``, ``bad_prediction``); ``loaded`` false when the model could not be loaded."""

    prediction: float | None
    abstained: str = ""
    detail: str = ""
    loaded: bool = True

    def same_as(self, score: Score) -> bool:
        """Bit for bit the same prediction, or the same abstention."""
        if not self.loaded:
            return False
        if self.abstained or score.abstained:
            return self.abstained == score.abstained
        return self.prediction == score.prediction


def _score_again(sources: Sources, score: Score, vector: Features) -> Rescore:
    """The model's score computed again on its window of archived vectors, as the model service computes it."""
    try:
        model, meta = Registry(sources.registry).load(score.model_id, feature_version=score.feature_version)
    except RegistryError as exc:
        return Rescore(None, detail=f"cannot load the model: {exc}", loaded=False)
    loaded = LoadedModel(model, meta)
    before = FeatureArchive(sources.store).read(vector.feature_set, vector.symbol,
                                                vector.open_time - DAY_MS - loaded.lookback * sources.interval_ms,
                                                vector.open_time)
    if vector_problem(vector, score.feature_version, loaded.n_features) is not None:
        return Rescore(None, "bad_input", "the model cannot read this vector")
    readable = [v for v in before if vector_problem(v, score.feature_version, loaded.n_features) is None]
    window = [*readable, vector][-loaded.lookback:]
    if len(window) < loaded.lookback:
        return Rescore(None, "warmup", f"{len(window)} of {loaded.lookback} vectors archived")
    prediction = loaded.predict(np.asarray([v.values for v in window], dtype=np.float64))
    return Rescore(prediction, "" if math.isfinite(prediction) else "bad_prediction")


def _chosen(prediction: Prediction) -> dict[str, Any]:
    return {**msgspec.to_builtins(prediction), "why": _why(prediction)}


def _why(p: Prediction) -> str:
    """Why the rendezvous chose what it chose, in words."""
    champion = next((m for m, r in p.roles.items() if r == "champion"), None)
    if p.chosen_by == "champion":
        return f"the champion {p.model_id} answered in time"
    absent = f"the champion {champion} did not answer" if champion else "no champion"
    if p.chosen_by == "fallback":
        return (f"{absent}; {p.model_id} ({p.roles.get(p.model_id, 'fallback')}) is the first model in priority "
                "order that answered")
    return f"{absent} and no challenger or canary answered: no prediction, the trader holds"


def _decision_row(sources: Sources, messages: MessageArchive, decision: Decision,
                  prediction: Prediction) -> dict[str, Any]:
    """The trader's decision, and the trader's rule applied again to the chosen prediction."""
    earlier: list[Decision] = messages.read("decision", decision.symbol, decision.open_time - DAY_MS,
                                            decision.open_time)
    before = earlier[-1].target_position if earlier else 0
    value = prediction.prediction if prediction.prediction is not None else math.nan
    target = sources.strategy.target(value, before)
    target = before if target is None else target
    rule = {"position_before": before, "action": action_of(before, target), "target_position": target,
            "position_source": "the previous archived decision" if earlier else "none archived: flat"}
    same = (rule["action"], target) == (decision.action, decision.target_position)
    same_input = decision.prediction == prediction.prediction
    return {**msgspec.to_builtins(decision), "rule": rule, "reproduced": same and same_input}


def _fills(sources: Sources, messages: MessageArchive, bar: Bar) -> list[dict[str, Any]] | None:
    """The fills of the order decided at ``bar`` (archived, else from the journal), each marked
    ``journaled`` when the trader's journal holds it; None when there is none."""
    ids = {client_order_id(bar.symbol, bar.open_time, leg) for leg in LEGS}
    ids |= {paper_order_id(bar.symbol, bar.close_time, leg) for leg in LEGS}
    archived: list[Fill] = messages.read("fill", bar.symbol, bar.open_time, bar.open_time + DAY_MS)
    journaled = _journal_fills(sources.journal, bar.symbol, ids)
    out = [{**msgspec.to_builtins(f), "journaled": f.client_order_id in journaled, "archived": True}
           for f in archived if f.client_order_id in ids]
    seen = {row["client_order_id"] for row in out}
    out += [_journal_fill(rec) for cid, rec in journaled.items() if cid not in seen]
    return out or None


def _journal_fill(rec: FillRecord) -> dict[str, Any]:
    """A fill only the journal holds, in the fields of a ``Fill`` message (its time is the fill's bar)."""
    fill = rec.fill
    return {"symbol": rec.symbol, "event_time": fill.time_ms, "client_order_id": rec.client_order_id,
            "side": "BUY" if fill.side > 0 else "SELL", "qty": fill.qty, "price": fill.price, "fee": fill.fee,
            "fee_asset": rec.fee_asset or "quote", "journaled": True, "archived": False}


def _journal_fills(path: Path, symbol: str, ids: set[str]) -> dict[str, FillRecord]:
    """The journal's fill records of ``symbol`` with one of ``ids`` (read only: a running trader owns it)."""
    found: dict[str, FillRecord] = {}
    for rec in read_journal(path, repair=False):
        fills = rec.fills if isinstance(rec, StepRecord) else [rec] if isinstance(rec, FillRecord) else []
        found.update((f.client_order_id, f) for f in fills if f.symbol == symbol and f.client_order_id in ids)
    return found


def _model(sources: Sources, model_id: str) -> dict[str, Any] | None:
    """The registry metadata of ``model_id`` (checksums verified), None for no model."""
    if not model_id:
        return None
    try:
        return Registry(sources.registry).show(model_id)
    except RegistryError as exc:  # deleted or damaged: the rest of the lineage still stands
        return {"model_id": model_id, "error": str(exc)}


def _features_check(sources: Sources, symbol: str, vector: Features) -> dict[str, Any]:
    """The vector computed again from the stored bars by the feature set, compared to the archived one."""
    fs = sources.feature_set
    if fs.version != vector.feature_version:
        return {"equal": False, "max_abs_diff": None,
                "detail": f"archived version {vector.feature_version}, the configured feature set is {fs.version}"}
    start = vector.open_time - 3 * fs.warmup * sources.interval_ms
    store = BarStore(sources.store)
    try:
        bars = store.read_bars(symbol, sources.interval_ms, start, vector.open_time + 1)
        context = {s: store.read_bars(s, sources.interval_ms, start, vector.open_time + 1)
                   for s in fs.context_symbols}
        frame = compute_features(bars, fs, context)
    except FeatureError as exc:
        return {"equal": False, "max_abs_diff": None, "detail": f"cannot compute features from the store: {exc}"}
    row = frame[frame["open_time"] == vector.open_time]
    if row.empty:
        return {"equal": False, "max_abs_diff": None, "detail": "the stored bars do not cover the warm-up"}
    again = row[list(fs.names)].to_numpy(np.float64)[0]
    diff = float(np.max(np.abs(again - np.asarray(vector.values, np.float64)))) if len(again) else 0.0
    equal = len(again) == len(vector.values) and diff <= FEATURE_TOLERANCE
    return {"equal": equal, "max_abs_diff": diff, "detail": "computed again from the stored bars"}
