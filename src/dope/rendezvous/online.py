"""Online learning on a stream of bars: when each label is learned, replayed offline, snapshotted and resumed.

One :class:`OnlineTrack` per symbol holds a model with ``learn_one`` and orders its work so that the
prediction for the bar opening at ``T`` is made with exactly the labels of the rows opening at or before
``T - horizon x interval`` learned, in time order, and no other: the label of row ``s`` is
``log(close[s + h] / close[s])`` (:class:`dope.rendezvous.Outcomes`), known only once bar ``s + h`` has
arrived. A feature vector whose own bar has not arrived yet waits for it (the collector's bar and the
featurizer's vector travel on different sockets); if it never comes (lost), the service releases the
vector when the bus went quiet (:meth:`OnlineTrack.release_all`), or beyond ``max_waiting`` vectors
(counted in ``late``). The model service and :func:`replay` drive the same track, so the predictions
published live equal a replay of the same bars exactly.

:class:`SnapshotStore` saves a track (the model through ``model.save``, checksummed in its
``model.json``, plus the track's pending rows and closes as JSON) atomically, and loads it back.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from dope.fileio import atomic_write_json
from dope.messages import Bar, Features
from dope.models.base import ModelError, load_model
from dope.rendezvous.outcomes import Outcomes
from dope.types import FloatArray

T = TypeVar("T")
ROW_ID = "row"
TRACK_FILE = "track.json"
LATEST_FILE = "latest.json"


class OnlineModel(Protocol):
    """A model that can learn one labelled row (the optional ``learn_one`` of the model protocol)."""

    kind: str
    lookback: int

    def predict_one(self, window: FloatArray) -> float: ...

    def learn_one(self, x: FloatArray, y: float) -> None: ...

    def save(self, directory: Path) -> None: ...


def learns_online(model: object) -> bool:
    """Whether ``model`` has a ``learn_one`` method."""
    return callable(getattr(model, "learn_one", None))


class OnlineTrack(Generic[T]):
    """One symbol's model, learning each label as soon as, and never before, the bar that realises it."""

    def __init__(self, model: OnlineModel, symbol: str, horizon: int, *, max_waiting: int = 1_000) -> None:
        self.model = model
        self.symbol = symbol
        self.horizon = horizon
        self.max_waiting = max_waiting
        self.outcomes = Outcomes(horizon_bars=horizon, keep=horizon + 2)
        self.rows: dict[int, FloatArray] = {}  # rows (windows) waiting for their label, by open time
        self.labels: dict[int, float] = {}  # realised labels not learned yet, by the row's open time
        self.waiting: deque[tuple[int, FloatArray, T, int]] = deque()  # (open time, window, item, arrived ns)
        self.interval_ms = 0
        self.newest_bar = -1
        self.learned = 0
        self.late = 0

    def on_bar(self, open_time: int, interval_ms: int, close: float) -> list[tuple[T, float]]:
        """Record a bar's close; return the predictions of the vectors that waited for it."""
        self.interval_ms = interval_ms
        for _, base, _, realised in self.outcomes.add_bar(self.symbol, open_time, interval_ms, close):
            self.labels[base] = realised
        self.newest_bar = max(self.newest_bar, open_time)
        return self._release()

    def on_features(self, open_time: int, window: FloatArray, item: T, arrived_ns: int = 0
                    ) -> list[tuple[T, float]]:
        """Queue one vector's window; return the predictions now ready (``item`` tags each)."""
        self.waiting.append((open_time, window, item, arrived_ns))
        return self._release()

    def release_all(self) -> list[tuple[T, float]]:
        """Predict every waiting vector now, its bar arrived or not (a lost bar must not stall the stream)."""
        return self._release(force=True)

    def _release(self, force: bool = False) -> list[tuple[T, float]]:
        ready = []
        while self.waiting and (force or self.waiting[0][0] <= self.newest_bar
                                or len(self.waiting) > self.max_waiting):
            open_time, window, item, _ = self.waiting.popleft()
            if open_time > self.newest_bar:
                self.late += 1
            self._learn_until(open_time - self.horizon * self.interval_ms)
            ready.append((item, float(self.model.predict_one(window))))
            self._remember(open_time, window)
        return ready

    def _remember(self, open_time: int, window: FloatArray) -> None:
        self.rows[open_time] = window
        for _, base, _, realised in self.outcomes.add_prediction(self.symbol, open_time, ROW_ID, 0.0):
            self.labels[base] = realised

    def _learn_until(self, limit: int) -> None:
        """Learn every known label of a row opening at or before ``limit``, oldest first; forget older rows
        whose label can no longer come."""
        for base in sorted(t for t in self.labels if t <= limit):
            realised = self.labels.pop(base)
            row = self.rows.pop(base, None)
            if row is not None:
                self.model.learn_one(row, realised)
                self.learned += 1
        for stale in [t for t in self.rows if t < limit]:
            del self.rows[stale]

    def state(self, model_id: str) -> dict[str, Any]:
        """The track without its model and waiting vectors, JSON-ready (see :meth:`restore`)."""
        return {"model_id": model_id, "symbol": self.symbol, "horizon": self.horizon,
                "interval_ms": self.interval_ms, "newest_bar": self.newest_bar, "learned": self.learned,
                "late": self.late, "rows": [[t, w.tolist()] for t, w in sorted(self.rows.items())],
                "labels": sorted(self.labels.items()), "outcomes": self.outcomes.export(self.symbol)}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` wrote (the model is restored separately)."""
        self.interval_ms, self.newest_bar = int(state["interval_ms"]), int(state["newest_bar"])
        self.learned, self.late = int(state["learned"]), int(state["late"])
        self.rows = {int(t): np.asarray(w, dtype=np.float64) for t, w in state["rows"]}
        self.labels = {int(t): float(y) for t, y in state["labels"]}
        self.outcomes.restore(self.symbol, state["outcomes"])


def replay(model: OnlineModel, X: FloatArray, closes: FloatArray, open_times: FloatArray, interval_ms: int,
           horizon: int) -> FloatArray:
    """The predictions a model service learning online publishes for these bars (row ``i`` = bar ``i``).

    ``model`` is copied, never changed. Each bar is given to the track before its vector (the usual order
    live; any order gives the same predictions). The first ``lookback - 1`` rows are NaN.
    """
    track: OnlineTrack[int] = OnlineTrack(copy.deepcopy(model), "replay", horizon)
    lookback = max(1, int(model.lookback))
    out = np.full(len(X), np.nan)
    for i in range(len(X)):
        track.on_bar(int(open_times[i]), interval_ms, float(closes[i]))
        if i + 1 < lookback:
            continue
        window = X[i] if lookback == 1 else X[i - lookback + 1: i + 1]
        for row, prediction in track.on_features(int(open_times[i]), window, i):
            out[row] = prediction
    return out


class SnapshotStore:
    """Snapshots of the tracks of one model service, one folder per symbol under ``root``.

    ``<root>/<symbol>/latest.json`` names the newest complete snapshot folder and the sha256 of its
    ``track.json``; the model inside is saved with ``model.save`` (its own checksums). A snapshot is
    written into a new folder before ``latest.json`` is replaced, so a kill at any moment leaves the
    previous one intact.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save(self, track: OnlineTrack[Any], model_id: str) -> None:
        """Write a snapshot of ``track`` (served model ``model_id``) and make it the latest."""
        folder = self._symbol_folder(track.symbol)
        previous = self._latest(folder)
        seq = int(previous["seq"]) + 1 if previous else 1
        name = f"snap-{seq:09d}"
        target = folder / name
        shutil.rmtree(target, ignore_errors=True)
        track.model.save(target / "model")
        text = json.dumps(track.state(model_id)) + "\n"
        (target / TRACK_FILE).write_text(text)
        atomic_write_json(folder / LATEST_FILE, {"seq": seq, "snapshot": name, "track_sha256": _sha(text)})
        if previous:
            shutil.rmtree(folder / str(previous["snapshot"]), ignore_errors=True)

    def load(self, symbol: str, model_id: str, make_track: Callable[[Any], OnlineTrack[Any]]
             ) -> OnlineTrack[Any] | None:
        """The latest snapshot of ``symbol`` for ``model_id`` as a track (``make_track(model)`` builds it),
        or None when there is none for this model; a damaged snapshot raises :class:`ModelError`."""
        folder = self._symbol_folder(symbol)
        latest = self._latest(folder)
        if latest is None:
            return None
        target = folder / str(latest["snapshot"])
        try:
            text = (target / TRACK_FILE).read_text()
        except OSError as exc:
            raise ModelError(f"snapshot {target} is unreadable: {exc}") from exc
        if _sha(text) != latest.get("track_sha256"):
            raise ModelError(f"{target / TRACK_FILE} does not match its checksum in {folder / LATEST_FILE}")
        state = json.loads(text)
        if state.get("model_id") != model_id:
            return None
        track = make_track(load_model(target / "model"))
        track.restore(state)
        return track

    def _symbol_folder(self, symbol: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", symbol) or symbol.startswith("."):
            raise ModelError(f"cannot snapshot symbol {symbol!r}: not a plain name")
        folder = self.root / symbol
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _latest(folder: Path) -> dict[str, Any] | None:
        path = folder / LATEST_FILE
        if not path.is_file():
            return None
        try:
            latest: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is unreadable: {exc}") from exc
        return latest


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()



class OnlineTracks:
    """What a model service needs to learn online: one track per symbol, resumed from the latest snapshot
    of this model when there is one, and snapshotted after every ``snapshot_every`` predictions (0: never).

    ``report(kind, text)`` receives the problems (a snapshot that cannot be written or read); the
    service counts and logs them and goes on.
    """

    def __init__(self, model: OnlineModel, model_id: str, horizon: int, store: SnapshotStore | None,
                 snapshot_every: int, report: Callable[[str, str], None]) -> None:
        self.model = model
        self.model_id = model_id
        self.horizon = horizon
        self.store = store
        self.snapshot_every = snapshot_every
        self.report = report
        self.tracks: dict[str, OnlineTrack[Any]] = {}
        self.since_snapshot: dict[str, int] = {}
        self.snapshots = 0
        self.resumed = 0

    def on_bar(self, bar: Bar) -> list[tuple[Any, float]]:
        """A collector bar: its close may realise a label and release a waiting vector."""
        track = self.track(bar.symbol)
        return self._count(track, track.on_bar(bar.open_time, bar.interval_ms, bar.close))

    def on_features(self, msg: Features, window: FloatArray, began_ns: int) -> list[tuple[Any, float]]:
        """A vector's window: the predictions ready now, each tagged ``(msg, began_ns)``."""
        track = self.track(msg.symbol)
        return self._count(track, track.on_features(msg.open_time, window, (msg, began_ns), began_ns))

    def release_late(self, now_ns: int, wait_ms: float) -> list[tuple[Any, float]]:
        """The predictions of vectors that waited over ``wait_ms`` for their bar (call when the bus is quiet)."""
        ready = []
        for track in self.tracks.values():
            if track.waiting and now_ns - track.waiting[0][3] > wait_ms * 1e6:
                ready += self._count(track, track.release_all())
        return ready

    def release_all(self) -> list[tuple[Any, float]]:
        """The predictions of every waiting vector (before the service switches to another model)."""
        return [pair for track in self.tracks.values() for pair in self._count(track, track.release_all())]

    def track(self, symbol: str) -> OnlineTrack[Any]:
        """The track of ``symbol``: the running one, else the latest snapshot's, else a fresh copy of the model."""
        track = self.tracks.get(symbol)
        if track is None:
            track = self.tracks[symbol] = self._resume(symbol) or self._new(copy.deepcopy(self.model), symbol)
        return track

    def _new(self, model: Any, symbol: str) -> OnlineTrack[Any]:
        return OnlineTrack(model, symbol, self.horizon)

    def _resume(self, symbol: str) -> OnlineTrack[Any] | None:
        if self.store is None:
            return None
        try:
            track = self.store.load(symbol, self.model_id, lambda model: self._new(model, symbol))
        except (ModelError, OSError, ValueError, KeyError, TypeError) as exc:
            self.report("snapshot_unreadable", f"[{symbol}] starting from {self.model_id} afresh: {exc}")
            return None
        if track is not None:
            self.resumed += 1
        return track

    def _count(self, track: OnlineTrack[Any], ready: list[tuple[Any, float]]) -> list[tuple[Any, float]]:
        self.since_snapshot[track.symbol] = self.since_snapshot.get(track.symbol, 0) + len(ready)
        return ready

    def save_due(self) -> None:
        """Snapshot every track that made ``snapshot_every`` predictions since its last one and has no vector
        waiting (the service calls this after publishing, so a snapshot never delays a score)."""
        if self.store is None or not self.snapshot_every:
            return
        for symbol, track in self.tracks.items():
            if self.since_snapshot.get(symbol, 0) < self.snapshot_every or track.waiting:
                continue
            try:
                self.store.save(track, self.model_id)
            except (OSError, ModelError) as exc:
                self.report("snapshot_failed", f"[{symbol}] {exc}")
            else:
                self.snapshots += 1
                self.since_snapshot[symbol] = 0

    def counters(self) -> dict[str, int]:
        """For the heartbeat: labels learned, vectors that went on without their bar, snapshots, predictions
        made since the last snapshot (lost at a crash), resumes."""
        return {"online.learned": sum(t.learned for t in self.tracks.values()),
                "online.late": sum(t.late for t in self.tracks.values()),
                "online.snapshots": self.snapshots, "online.unsaved": sum(self.since_snapshot.values()),
                "online.resumed": self.resumed}
