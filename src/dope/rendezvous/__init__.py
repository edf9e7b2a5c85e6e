"""The rendezvous: collect every model's score for a feature vector, pick one under a deadline, keep scorecards.

See ``docs/rendezvous.md``. The core (:class:`Rendezvous`) is pure and clock-driven; the
service ``dope.services.rendezvous`` wraps it with sockets.
"""

from dope.rendezvous.outcomes import Outcomes
from dope.rendezvous.policy import Rendezvous, Round
from dope.rendezvous.roles import Roles, RolesWatcher
from dope.rendezvous.scorecard import ModelCard, Ring, ScorecardBook, spearman
from dope.rendezvous.shadow import ShadowAccount, ShadowRule

__all__ = ["ModelCard", "Outcomes", "Rendezvous", "Ring", "Roles", "RolesWatcher", "Round", "ScorecardBook",
           "ShadowAccount", "ShadowRule", "spearman"]
