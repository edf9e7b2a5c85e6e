"""The roles models play in the rendezvous, and a watcher that reloads them from the registry.

>>> roles = Roles.from_mapping({"rf": "champion", "lstm": "challenger", "zero": "canary", "gbm": "shadow"})
>>> roles.priority(canary_fallback=True)
('rf', 'lstm', 'zero')
>>> sorted(roles.expected)
['gbm', 'lstm', 'rf', 'zero']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger("dope.rendezvous")

ACTIVE_ROLES: Final = ("champion", "challenger", "shadow", "canary")


@dataclass(frozen=True)
class Roles:
    """Who plays what: one champion, challengers in priority order, shadows, canaries."""

    champion: str | None = None
    challengers: tuple[str, ...] = ()
    shadows: tuple[str, ...] = ()
    canaries: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, roles: Mapping[str, str], order: Sequence[str] = ()) -> Roles:
        """Roles from ``{model_id: role}`` (the registry's form); ``order`` ranks challengers (others by id)."""
        def having(role: str) -> tuple[str, ...]:
            ids = [mid for mid, r in roles.items() if r == role]
            rank = {mid: i for i, mid in enumerate(order)}
            return tuple(sorted(ids, key=lambda mid: (rank.get(mid, len(rank)), mid)))

        champions = having("champion")
        if len(champions) > 1:
            log.warning("several champions %s: %s wins, the others act as challengers", champions, champions[0])
        return cls(champions[0] if champions else None, champions[1:] + having("challenger"),
                   having("shadow"), having("canary"))

    def priority(self, canary_fallback: bool) -> tuple[str, ...]:
        """Models that may be chosen, best first: champion, challengers, then canaries if allowed."""
        head = (self.champion,) if self.champion else ()
        return head + self.challengers + (self.canaries if canary_fallback else ())

    @property
    def expected(self) -> frozenset[str]:
        """Every model a round waits for (shadows included)."""
        return frozenset(self.priority(True) + self.shadows)

    def role_of(self, model_id: str) -> str:
        """``champion``, ``challenger``, ``shadow``, ``canary`` or ``""`` (no role)."""
        if model_id == self.champion:
            return "champion"
        for role, ids in (("challenger", self.challengers), ("shadow", self.shadows), ("canary", self.canaries)):
            if model_id in ids:
                return role
        return ""

    def restrict(self, deployed: Iterable[str]) -> Roles:
        """Only the models in ``deployed`` (the ones actually running), roles kept."""
        keep = frozenset(deployed)
        return Roles(self.champion if self.champion in keep else None,
                     *(tuple(m for m in ids if m in keep) for ids in (self.challengers, self.shadows, self.canaries)))

    def as_mapping(self) -> dict[str, str]:
        """``{model_id: role}``."""
        return {mid: self.role_of(mid) for mid in sorted(self.expected)}


class RolesWatcher:
    """Reads ``<registry>/roles.json`` again whenever its modification time changes.

    ``poll()`` is cheap (one ``stat``) and returns new ``Roles`` only when the file changed
    and parsed; a broken file is logged and the previous roles stay in force.
    """

    def __init__(self, registry_root: str | Path, order: Sequence[str] = ()) -> None:
        from dope.models.registry import ROLES_FILE, Registry

        self.registry = Registry(registry_root)
        self.path = Path(registry_root) / ROLES_FILE
        self.order = tuple(order)
        self._stamp: tuple[int, int, int] | None = None

    def poll(self) -> Roles | None:
        """New roles if the file changed since the last poll, else None."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return self._read()

    def _read(self) -> Roles | None:
        try:
            mapping = {mid: role for mid, role in self.registry.roles().items() if role in ACTIVE_ROLES}
        except (OSError, ValueError) as exc:  # RegistryError is a ValueError
            log.warning("rendezvous: cannot read roles from %s (%s); keeping the current roles", self.path, exc)
            return None
        return Roles.from_mapping(mapping, self.order)
