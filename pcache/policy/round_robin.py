"""``round_robin``: each routable replica in turn, blind to prefixes (the baseline that collapses)."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView
from pcache.policy.base import Candidate, Decision, Reason
from pcache.policy.common import BasePolicy, excluded_by_state, no_replica

__all__ = ["RoundRobinPolicy"]


class RoundRobinPolicy(BasePolicy):
    """Cycles over the routable replicas in fleet order."""

    name = "round_robin"

    def __init__(self) -> None:
        self._cursor = 0

    def _decide(self, fingerprint: Fingerprint, fleet: FleetView, book: bool) -> Decision:
        routable = fleet.routable
        if not routable:
            return no_replica(self.name, fleet, fingerprint.session)
        n = len(routable)
        start = self._cursor % n
        if book:
            self._cursor = start + 1
        order = routable[start:] + routable[:start]
        candidates = [Candidate(r.name, float(n - i), r.load) for i, r in enumerate(order)]
        candidates.extend(excluded_by_state(fleet))
        return Decision(
            policy=self.name,
            replica=order[0].name,
            reason=Reason.ROUND_ROBIN,
            candidates=tuple(candidates),
            session=fingerprint.session,
        )
