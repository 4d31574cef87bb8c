"""``least_load``: the routable replica with the fewest requests in flight (per unit of weight)."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaView
from pcache.hashing import hrw_score_bytes, key_bytes
from pcache.policy.base import Candidate, Decision, Reason
from pcache.policy.common import BasePolicy, excluded_by_state
from pcache.policy.keys import request_key

__all__ = ["LeastLoadPolicy"]


class LeastLoadPolicy(BasePolicy):
    """Least load first; ties broken by rendezvous hashing of the request's key, so they spread."""

    name = "least_load"

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
        kb = key_bytes(request_key(fingerprint))
        ranked = sorted(
            routable,
            key=lambda r: (r.load / r.weight if r.weight > 0 else float("inf"), -hrw_score_bytes(kb, r.name)),
        )
        candidates = [Candidate(r.name, -float(r.load), r.load) for r in ranked]
        candidates.extend(excluded_by_state(fleet))
        return Decision(
            policy=self.name,
            replica=ranked[0].name,
            reason=Reason.LEAST_LOAD,
            candidates=tuple(candidates),
            session=fingerprint.session,
        )
