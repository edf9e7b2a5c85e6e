"""The rendezvous: collect every model's score for a feature vector, pick one under a deadline, keep scorecards.

See ``docs/rendezvous.md``. The core (:class:`Rendezvous`) is pure and clock-driven; the
service ``dope.services.rendezvous`` wraps it with sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dope.lazy import lazy_exports

if TYPE_CHECKING:
    from dope.rendezvous.outcomes import Outcomes
    from dope.rendezvous.policy import Rendezvous, Round
    from dope.rendezvous.roles import Roles, RolesWatcher
    from dope.rendezvous.scorecard import ModelCard, Ring, ScorecardBook, spearman
    from dope.rendezvous.shadow import ShadowAccount, ShadowRule

_HOME = {"Outcomes": "outcomes", "Rendezvous": "policy", "Round": "policy", "Roles": "roles",
         "RolesWatcher": "roles", "ModelCard": "scorecard", "Ring": "scorecard", "ScorecardBook": "scorecard",
         "spearman": "scorecard", "ShadowAccount": "shadow", "ShadowRule": "shadow"}
__all__ = ["ModelCard", "Outcomes", "Rendezvous", "Ring", "Roles", "RolesWatcher", "Round", "ScorecardBook",
           "ShadowAccount", "ShadowRule", "spearman"]
__getattr__ = lazy_exports(__name__, _HOME)  # names load on first use: the services' config reads .config
