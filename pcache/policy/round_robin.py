"""``round_robin``: each routable replica in turn, blind to prefixes (the baseline that collapses)."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaView
from pcache.policy.base import Candidate, Decision, Reason
from pcache.policy.common import BasePolicy, excluded_by_state

__all__ = ["RoundRobinPolicy"]


class RoundRobinPolicy(BasePolicy):
    """Cycles over the routable replicas in fleet order."""

    name = "round_robin"

    def __init__(self) -> None:
        self._cursor = 0

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
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
