"""The rendezvous service: ``features.*`` + ``score.*`` + ``bar.*`` -> ``prediction.*`` and ``scorecard.*``.

A thin loop around :class:`dope.rendezvous.Rendezvous`: a feature vector from the featurizer
opens a round (its deadline starts then, on the service's clock; with event deadlines, the
default off the live exchange, it waits for every model instead), every model service's scores
fill it, and the loop closes due rounds after every message and every quiet receive. Bars from
the collector realise the forward returns the scorecards need, and fill the orders of every model's
shadow account (the trader's own rule and costs, ``[trader]``: :func:`shadow_rule`). Roles come from the
configuration and, with ``watch_registry``, from the registry's ``roles.json`` (checked once per
round: a promotion is in force from the next bar). Only deployed models are waited for when
``[[models.deploy]]`` lists them (``role:<r>`` follows the holder of the role, as the model
service does). Scorecards are published every ``publish_every`` rounds and saved to
``<store>/scorecards/<name>.json`` every ``persist_every`` rounds and on stop (reloaded at start),
when the bus is quiet (off the path of a waiting prediction), at the latest 10 times later.

    python -m dope.services.rendezvous --config dope.toml
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dope.clock import Clock
from dope.config import DopeConfig, RendezvousConfig, TraderConfig
from dope.messages import AnyMessage, Bar, Features, Score
from dope.rendezvous import Rendezvous, Roles, RolesWatcher, ShadowRule
from dope.services.base import (
    Service,
    endpoint_of,
    model_endpoints,
    service_main,
    service_publisher,
    service_subscriber,
)
from dope.trading.rule import Costs, Thresholds
from dope.transport import Publisher, Subscriber

ROLE_PREFIX = "role:"
OVERDUE = 10
EVENT_POLL_MS = 50
IDLE_WAIT_MS = 100
"""The longest receive wait while no round is open (with one open: ``poll_ms``, or until its deadline)."""


def scorecard_path(config: DopeConfig, name: str | None = None) -> Path:
    """Where the rendezvous named ``name`` keeps its scorecards: ``<store>/scorecards/<name>.json``."""
    return Path(config.store.path) / "scorecards" / f"{name or config.rendezvous.service_name}.json"


def event_deadlines(config: DopeConfig) -> bool:
    """Whether rounds wait for every model (``deadline_mode`` ``event``, or ``auto`` off the live exchange)."""
    mode = config.rendezvous.deadline_mode
    return mode == "event" or (mode == "auto" and config.collector.source != "binance")


def shadow_rule(trader: TraderConfig) -> ShadowRule:
    """The trader's thresholds, costs and cash, as the scorecards' shadow accounts trade by them."""
    return ShadowRule(Thresholds(trader.upper, trader.lower, trader.allow_short),
                      Costs(trader.fee_rate, trader.slippage_bps / 10_000.0, trader.fraction), trader.initial_cash)


def config_roles(config: RendezvousConfig) -> Roles:
    """The roles written in ``[rendezvous]``."""
    return Roles(config.champion or None, config.challengers, config.shadows, config.canaries)


def deployed_roles(roles: Roles, deploys: Sequence[str]) -> Roles:
    """``roles`` restricted to the deployed models (``deploys``: ids or ``role:<r>``); all if none listed."""
    if not deploys:
        return roles
    mapping = roles.as_mapping()
    keep = {d for d in deploys if not d.startswith(ROLE_PREFIX)}
    for target in (d[len(ROLE_PREFIX):] for d in deploys if d.startswith(ROLE_PREFIX)):
        keep.update(sorted(mid for mid, role in mapping.items() if role == target)[:1])
    return roles.restrict(keep)


class LiveRoles:
    """The deployed models' roles as the rendezvous plays them: the configured ones, replaced by the registry's
    whenever its ``roles.json`` changes (``watcher``: with ``watch_registry``), restricted to ``deploys``."""

    def __init__(self, config: RendezvousConfig, watcher: RolesWatcher | None, deploys: Sequence[str]) -> None:
        self.canary_fallback = config.canary_fallback
        self.watcher = watcher
        self.deploys = tuple(deploys)
        self.all = config_roles(config)
        self.current = deployed_roles(self.all, self.deploys)

    def refresh(self) -> bool:
        """Take the registry's roles if ``roles.json`` changed (one ``stat``); True when the roles changed."""
        roles = None if self.watcher is None else self.watcher.poll()
        if roles is None or roles == self.all:
            return False
        self.all, self.current = roles, deployed_roles(roles, self.deploys)
        return True

    def first_in_line(self) -> str | None:
        """The model a live prediction waits for first: the champion, else the first model standing in."""
        priority = self.current.priority(self.canary_fallback)
        return priority[0] if priority else None


def live_roles(config: DopeConfig) -> LiveRoles:
    """The roles the rendezvous of ``config`` plays, as it reads them."""
    rv = config.rendezvous
    watcher = RolesWatcher(config.registry.path, rv.challengers) if rv.watch_registry else None
    return LiveRoles(rv, watcher, [d.model for d in config.models.deploy])


class RendezvousService(Service):
    """Runs the rendezvous core on the bus."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber],
                 config: RendezvousConfig, *, rule: ShadowRule, clock: Clock | None = None,
                 heartbeat_ms: int = 1_000, roles: LiveRoles | None = None, scorecards: Path | None = None,
                 event_deadlines: bool = False) -> None:
        poll_ms = max(config.poll_ms, EVENT_POLL_MS) if event_deadlines else config.poll_ms  # only liveness to watch
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms, receive_timeout_ms=poll_ms,
                         clock=clock)
        self.config = config
        self.roles = roles or LiveRoles(config, None, ())
        self.core = Rendezvous(config, self.roles.current, self.clock, rule=rule, event_deadlines=event_deadlines)
        self.scorecard_file = scorecards
        self._closed_at_publish = self._closed_at_persist = 0
        if scorecards is not None:
            loaded = self.core.book.load(scorecards)
            self.log.info("%s: %d scorecard(s) resumed from %s", name, loaded, scorecards)

    def handle(self, msg: AnyMessage) -> None:
        if isinstance(msg, Features):
            self.refresh_roles()
            self.core.open_round(msg)
        elif isinstance(msg, Score):
            self.core.add_score(msg)
        elif isinstance(msg, Bar):
            self.core.add_bar(msg)
        self.close_due()

    def on_idle(self) -> None:
        self.close_due()
        self.keep_books(1)

    def wait_ms(self) -> int:
        """Until the oldest open round's deadline (at most ``poll_ms``); ``IDLE_WAIT_MS`` when none is open."""
        deadline = self.core.next_deadline()
        if deadline is None:
            return max(self.receive_timeout_ms, IDLE_WAIT_MS)
        return max(1, min(self.receive_timeout_ms, deadline - self.clock.now_ms()))

    def refresh_roles(self) -> None:
        """Take the registry's roles if ``roles.json`` changed (one ``stat``)."""
        if self.roles.refresh():
            self.core.set_roles(self.roles.current)

    def close_due(self) -> None:
        """Publish the predictions of every round due now; the scorecards only when long overdue."""
        for prediction in self.core.due(self.clock.now_ms()):
            self.publish(prediction)
        self.keep_books(OVERDUE)

    def keep_books(self, factor: int) -> None:
        """Publish the scorecards every ``factor x publish_every`` rounds, save them every ``factor x
        persist_every``. The receive loop asks with factor 1 when the bus is quiet, so this work (a few
        ms) stays off the path of a waiting prediction; a replay that never idles gets it when overdue."""
        closed = self.core.counters["rounds_closed"]
        if closed - self._closed_at_publish >= factor * self.config.publish_every:
            self.publish_scorecards()
        if closed - self._closed_at_persist >= factor * self.config.persist_every:
            self.save_scorecards()

    def publish_scorecards(self) -> None:
        """Publish every model's scorecard now (topic ``scorecard.<symbol>``)."""
        self._closed_at_publish = self.core.counters["rounds_closed"]
        for card in self.core.scorecards():
            self.publish(card)

    def save_scorecards(self) -> None:
        """Write the scorecards file now (atomically)."""
        self._closed_at_persist = self.core.counters["rounds_closed"]
        if self.scorecard_file is not None:
            self.core.book.save(self.scorecard_file, self.core.roles.as_mapping())

    def finish(self) -> None:
        """On stop: close what is due, publish and save the scorecards."""
        self.close_due()
        self.publish_scorecards()
        self.save_scorecards()

    def extra_counters(self) -> Mapping[str, int]:
        counts = {f"rendezvous.{k}": int(v) for k, v in self.core.counters.items()}
        counts["rendezvous.open_rounds"] = self.core.open_rounds()
        counts["rendezvous.unrealisable"] = self.core.outcomes.unrealisable
        counts["rendezvous.shadow_stale"] = sum(card.shadow.stale for card in self.core.book.cards.values())
        return counts


def build(config: DopeConfig, **overrides: Any) -> RendezvousService:
    """The rendezvous of ``config``; overrides: ``name``, ``clock``, ``endpoint``, ``score_endpoints``,
    ``features_endpoint``, ``bars_endpoint``, ``scorecards`` (a path, or None for no file)."""
    rv = config.rendezvous
    name = overrides.get("name") or rv.service_name
    sources = [overrides.get("features_endpoint") or endpoint_of(config, "featurizer"),
               *(overrides.get("score_endpoints") or model_endpoints(config)),
               overrides.get("bars_endpoint") or endpoint_of(config, "collector")]
    clock = overrides.get("clock")
    subscriber = service_subscriber(config, ["features.", "score.", "bar."], list(dict.fromkeys(sources)))
    publisher = service_publisher(config, name, overrides.get("endpoint") or endpoint_of(config, "rendezvous"),
                                  clock=clock)
    return RendezvousService(
        name, publisher, [subscriber], rv, rule=shadow_rule(config.trader), clock=clock,
        heartbeat_ms=config.bus.heartbeat_ms, roles=live_roles(config),
        scorecards=overrides.get("scorecards", scorecard_path(config, name)), event_deadlines=event_deadlines(config))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dope.services.rendezvous --config FILE [--name N]``."""
    return service_main(build, argv, prog="dope.services.rendezvous", default_name="rendezvous")


if __name__ == "__main__":
    raise SystemExit(main())
