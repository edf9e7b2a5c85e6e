"""A model service: ``features.*`` -> one registered model -> ``score.*`` (one process per deployed model).

``[[models.deploy]]`` entry ``--deploy I`` names the model: a registry id, or ``role:<role>``
(the model holding that role in the registry's ``roles.json``; when the roles change, checked
on every vector by the file's modification time, the service loads the new holder without a
restart). The model is loaded through the registry (checksums verified) for the feature-set
version the featurizer computes: a model trained on another version is refused with a
clear error at start (exit status 2) and, for a role deployment, skipped at reload (logged).

The service keeps the last ``lookback`` vectors per symbol and publishes a :class:`Score` with
the model id, kind, prediction and latency (receipt of the vector -> publish). Vectors of
another feature version or length, non-finite values and non-finite predictions are
rejected, counted and logged; for each of them, and for every vector of the warm-up, the service
publishes an *abstention* (a ``Score`` with ``abstained`` set and a NaN prediction), so the
rendezvous knows at once that no prediction will come.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dope.config import DopeConfig, ModelDeployConfig
from dope.errors import UserError
from dope.fileio import file_stamp
from dope.messages import AnyMessage, Bar, Features, Score
from dope.models.registry import Registry, RegistryError
from dope.models.serving import LoadedModel, vector_problem
from dope.rendezvous.online import OnlineTracks, SnapshotStore, learns_online
from dope.services.base import (
    Service,
    endpoint_of,
    model_service_name,
    service_main,
    service_publisher,
    service_subscriber,
)
from dope.services.featurizer import feature_set_of_config
from dope.services.rendezvous import ROLE_PREFIX, LiveRoles, event_deadlines, live_roles
from dope.transport import Publisher, Subscriber

LABEL_WAIT_MS = 10  # an online model's vector waits at most this (once the bus is quiet) for its own bar
ONLINE_FOLDER = "online"  # <registry>/online/<service name>/<symbol>/: snapshots of online models


class ModelService(Service):
    """Scores every feature vector with one model (fixed id or the holder of a role)."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], registry: Registry,
                 target: str, feature_version: str, *, heartbeat_ms: int = 1_000, delay_ms: int = 0,
                 nan_every: int = 0, horizon: int = 1, snapshots: SnapshotStore | None = None,
                 snapshot_every: int = 1, lead: LiveRoles | None = None, yield_ms: int = 0) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms)
        self.registry = registry
        self.target = target
        self.feature_version = feature_version
        self.delay_ms = delay_ms
        self.nan_every = nan_every
        self.loaded: LoadedModel | None = None
        self.horizon = horizon
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.online: OnlineTracks | None = None
        self.windows: dict[str, deque[np.ndarray]] = {}
        self._roles_stamp: tuple[int, int] | None = None
        self.lead = lead
        self.yield_ms = yield_ms
        self.counters.update(scores=0, reloads=0, no_model=0, yield_ms=0)

    @property
    def role(self) -> str | None:
        """The role followed (``role:champion`` -> ``champion``), or None for a fixed model id."""
        return self.target[len(ROLE_PREFIX):] if self.target.startswith(ROLE_PREFIX) else None

    async def setup(self) -> None:
        """Load the model (fails loudly for a fixed id; a role with no holder waits for one)."""
        if self.role is None:
            self._install(self.target)
        else:
            self.refresh_roles()
        self.follow_lead()

    def follow_lead(self) -> None:
        """Live (``lead``): a model the prediction does not wait for first yields the CPU to the one it does,
        scoring ``yield_ms`` after a vector arrived (``settle_ms``); the model first in line scores at once."""
        if self.lead is None:
            return
        self.lead.refresh()
        first = self.lead.first_in_line()
        settle = 0 if self.loaded is not None and self.loaded.model_id == first else self.yield_ms
        if settle != self.settle_ms:
            self.log.info("%s: %s, scores %d ms after a vector arrives", self.name,
                          "first in line" if settle == 0 else f"yields to {first or 'no model'}", settle)
        self.settle_ms = self.counters["yield_ms"] = settle

    def refresh_roles(self) -> None:
        """Reload when ``roles.json`` changed and the role's holder is another model."""
        if self.role is None:
            return
        stamp = file_stamp(self.registry.root / "roles.json")
        if stamp == self._roles_stamp:
            return
        self._roles_stamp = stamp
        holder = self._holder()
        if holder is None and self.loaded is not None:  # the role was taken away (a promotion, a rejection)
            self.log.info("%s: no model holds %s any more; %s stops scoring", self.name, self.role,
                          self.loaded.model_id)
            self.loaded = None
            self.count("unloads")
            return
        if holder is None or (self.loaded is not None and holder == self.loaded.model_id):
            return
        try:
            self._install(holder)
        except UserError as exc:
            self.count("reload_errors")
            self.problems.report("reload_error", f"cannot load {holder} ({self.role}): {exc}")

    def _holder(self) -> str | None:
        try:
            roles = self.registry.roles()
        except RegistryError as exc:
            self.problems.report("roles_error", str(exc))
            return None
        return next((mid for mid, role in sorted(roles.items()) if role == self.role), None)

    def _install(self, model_id: str) -> None:
        model, meta = self.registry.load(model_id, feature_version=self.feature_version)
        if self.online is not None:  # vectors waiting for their bar are scored by the model they came to
            self._publish_scores(self.online.release_all())
        previous = self.loaded
        self.loaded = LoadedModel(model, meta)
        self.windows = {s: deque(w, maxlen=self.loaded.lookback) for s, w in self.windows.items()}
        self.online = self._online(model, meta)
        if previous is not None:
            self.count("reloads")
        self._warm_up(self.loaded)
        self.log.info("%s serves %s (%s, lookback %d)%s", self.name, model_id, self.loaded.kind,
                      self.loaded.lookback, f" for role {self.role}" if self.role else "")

    def _online(self, model: Any, meta: dict[str, Any]) -> OnlineTracks | None:
        """Online learning for a model with ``learn_one`` (its training horizon, else the configured one)."""
        if not learns_online(model):
            return None
        horizon = int(meta.get("horizon") or self.horizon)
        return OnlineTracks(model, str(meta["model_id"]), horizon, self.snapshots, self.snapshot_every,
                            self.problems.report)

    def extra_counters(self) -> dict[str, int]:
        return self.online.counters() if self.online is not None else {}

    def _warm_up(self, loaded: LoadedModel) -> None:
        """One prediction on a window of zeros, so the first real vector does not pay for loading the
        model's compiled fast path (hundreds of ms)."""
        window = np.zeros((loaded.lookback, loaded.n_features))
        try:
            loaded.model.predict_one(window if loaded.lookback > 1 else window[0])
        except Exception as exc:  # a model that cannot score zeros still serves real vectors
            self.problems.report("warm_up", f"{loaded.model_id}: warm-up prediction failed: {exc!r}")
            return
        self.count("warm_ups")

    def on_idle(self) -> None:
        """Between vectors: pick up a promotion early, so the next vector finds the model loaded; an online
        model's vectors whose bar did not come (lost) are scored without waiting longer; live, whether to yield."""
        self.refresh_roles()
        self.follow_lead()
        if self.online is not None:
            self._publish_scores(self.online.release_late(time.perf_counter_ns(), LABEL_WAIT_MS))

    def handle(self, msg: AnyMessage) -> None:
        if isinstance(msg, Bar):
            if self.online is not None:
                self._publish_scores(self.online.on_bar(msg))
            return
        if not isinstance(msg, Features):
            return
        began = time.perf_counter_ns()
        self.refresh_roles()
        window = self._window(msg)
        if window is None:
            return
        if self.online is not None:
            self._publish_scores(self.online.on_features(msg, window, began))
            return
        assert self.loaded is not None
        self._publish_scores([((msg, began), self.loaded.predict(window))])

    def _publish_scores(self, ready: list[tuple[tuple[Features, int], float]]) -> None:
        for (msg, began), prediction in ready:
            score = self._score(msg, prediction, began)
            self.publish(score)
            self.count("scores" if not score.abstained else "abstentions")
        if ready and self.online is not None:
            self.online.save_due()

    def _window(self, msg: Features) -> np.ndarray | None:
        loaded = self.loaded
        if loaded is None:
            self.count("no_model")
            return None
        problem = vector_problem(msg, self.feature_version, loaded.n_features)
        if problem is not None:
            self.reject(problem[0], f"features {msg.open_time}: {problem[1]}", msg.symbol)
            self._abstain(msg, "bad_input")
            return None
        window = self.windows.setdefault(msg.symbol, deque(maxlen=loaded.lookback))
        window.append(np.asarray(msg.values, dtype=np.float64))
        if len(window) < loaded.lookback:
            self.count("warmup")
            self._abstain(msg, "warmup")
            return None
        return np.stack(window)

    def _abstain(self, msg: Features, why: str) -> None:
        """Tell the rendezvous that no prediction will come for this vector."""
        loaded = self.loaded
        assert loaded is not None
        self.publish(Score(symbol=msg.symbol, event_time=msg.event_time, open_time=msg.open_time,
                           model_id=loaded.model_id, model_kind=loaded.kind, feature_version=msg.feature_version,
                           prediction=math.nan, latency_us=0, abstained=why))
        self.count("abstentions")

    def _score(self, msg: Features, prediction: float, began_ns: int) -> Score:
        loaded = self.loaded
        assert loaded is not None
        abstained = ""
        if not math.isfinite(prediction):
            self.reject("bad_prediction", f"{loaded.model_id} predicted {prediction} for {msg.open_time}",
                        msg.symbol)
            abstained = "bad_prediction"
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000)
        if self.nan_every and (self.counters["scores"] + 1) % self.nan_every == 0:
            prediction = math.nan  # fault injection (tests, drills): a broken model's output
        latency_us = (time.perf_counter_ns() - began_ns) // 1_000
        return Score(symbol=msg.symbol, event_time=msg.event_time, open_time=msg.open_time,
                     model_id=loaded.model_id, model_kind=loaded.kind, feature_version=msg.feature_version,
                     prediction=prediction, latency_us=int(latency_us), abstained=abstained)




def deployment(config: DopeConfig, index: int) -> ModelDeployConfig:
    """The ``index``-th ``[[models.deploy]]`` entry, or a ``UserError`` naming the range."""
    deploys = config.models.deploy
    if not 0 <= index < len(deploys):
        raise UserError(f"no [[models.deploy]] entry {index}: the configuration deploys {len(deploys)} model(s)")
    return deploys[index]


def reads_bars(config: DopeConfig, index: int) -> bool:
    """Whether deployment ``index`` subscribes to the collector's bars: when its model learns online, or may
    (a role, whose holder can change; a model the registry cannot show). Others are not woken by every bar,
    which would take CPU from the featurizer at the moment it computes that bar's features."""
    target = deployment(config, index).model
    if target.startswith(ROLE_PREFIX):
        return True
    try:
        return bool(Registry(config.registry.path).show(target).get("learns_online", False))
    except UserError:
        return True  # the service's own start names the problem


def build(config: DopeConfig, **overrides: Any) -> ModelService:
    """The model service of deployment ``deploy`` (``name``, ``delay_ms`` may be overridden)."""
    index = int(overrides.get("deploy", 0))
    deploy = deployment(config, index)
    name = overrides.get("name") or model_service_name(config, index)
    subscribers = [service_subscriber(config, ["features."], [endpoint_of(config, "featurizer")])]
    if reads_bars(config, index):  # the labels of an online model
        subscribers.append(service_subscriber(config, ["bar."], [endpoint_of(config, "collector")]))
    publisher = service_publisher(config, name, deploy.endpoint)
    fs = feature_set_of_config(config)
    snapshots = SnapshotStore(Path(config.registry.path) / ONLINE_FOLDER / name)
    return ModelService(name, publisher, subscribers, Registry(config.registry.path), deploy.model,
                        fs.version, heartbeat_ms=config.bus.heartbeat_ms,
                        delay_ms=int(overrides.get("delay_ms", deploy.delay_ms)), nan_every=deploy.nan_every,
                        horizon=config.rendezvous.horizon_bars, snapshots=snapshots,
                        snapshot_every=deploy.snapshot_every, lead=lead_of_config(config), yield_ms=config.models.yield_ms)


def lead_of_config(config: DopeConfig) -> LiveRoles | None:
    """The rendezvous' roles, followed to yield to the model first in line: live only (a replay's rounds wait
    for every model, so yielding would only slow it)."""
    return live_roles(config) if config.models.yield_ms and not event_deadlines(config) else None


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deploy", type=int, default=0, help="index of the [[models.deploy]] entry (default 0)")
    parser.add_argument("--delay-ms", type=int, help="tests only: sleep this long before each score")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.model --config FILE --deploy I``."""
    return service_main(build, argv, prog="dope.services.model", add_arguments=_arguments, default_name="model")


if __name__ == "__main__":
    raise SystemExit(main())
