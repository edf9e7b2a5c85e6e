"""The rendezvous' settings: deadlines, roles, scorecards.

Its own type, composed by :class:`dope.config.DopeConfig` (section ``[rendezvous]``): this package
does not import the application-wide configuration. Unknown fields are an error.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class RendezvousConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The rendezvous (see ``docs/rendezvous.md``): deadline, roles, scorecards.

    Roles come from the registry's ``roles.json`` when ``watch_registry`` (reloaded when it
    changes); ``champion``/``challengers``/``shadows``/``canaries`` are used until then (or
    always, without the registry). ``challengers`` also ranks registry challengers (others by id).
    The scorecards' P&L follows the trader's rule and costs (``[trader]``, given by the service).
    ``deadline_mode``: ``wall`` closes a round ``deadline_ms`` after its features arrived (live);
    ``event`` waits for every expected model (a replay is deterministic), giving up on a model only
    after ``liveness_ms`` of wall clock without its answer (a dead model); ``auto`` is ``event``
    unless the collector's source is the live exchange.
    """

    deadline_ms: int = 50
    deadline_mode: Literal["auto", "wall", "event"] = "auto"
    liveness_ms: int = 10_000
    watch_registry: bool = True
    champion: str = ""
    challengers: tuple[str, ...] = ()
    shadows: tuple[str, ...] = ()
    canaries: tuple[str, ...] = ()
    canary_fallback: bool = True
    canary_window: int = 100
    canary_min_rounds: int = 20
    canary_max_divergence: float = 0.002
    horizon_bars: int = 1
    window: int = 500
    latency_window: int = 1024
    publish_every: int = 10
    persist_every: int = 100
    poll_ms: int = 5
    service_name: str = "rendezvous"

    def __post_init__(self) -> None:
        if self.deadline_ms < 0 or self.poll_ms < 1 or self.horizon_bars < 1:
            raise ValueError("rendezvous: need deadline_ms >= 0, poll_ms >= 1, horizon_bars >= 1")
        for name in ("canary_window", "window", "latency_window", "publish_every", "persist_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"rendezvous.{name} must be >= 1, got {getattr(self, name)}")
        if not self.canary_max_divergence >= 0:
            raise ValueError(f"rendezvous.canary_max_divergence must be >= 0, got {self.canary_max_divergence}")
