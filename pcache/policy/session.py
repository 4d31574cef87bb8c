"""``session``: rendezvous hashing on the session key, bounded by load (sticky sessions)."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView
from pcache.hashing import hrw_score_bytes, key_bytes, load_bound
from pcache.policy.base import Decision, Reason
from pcache.policy.common import BasePolicy, excluded_by_state, least_loaded, no_replica, walk_ranking
from pcache.policy.keys import request_key

__all__ = ["SessionPolicy"]


class SessionPolicy(BasePolicy):
    """HRW on the session key over routable replicas; the first under ``ceil((1+eps)*mean)`` wins."""

    name = "session"

    def __init__(self, eps: float = 0.25) -> None:
        if eps < 0:
            raise ValueError("eps must be >= 0")
        self.eps = eps

    def _decide(self, fingerprint: Fingerprint, fleet: FleetView, book: bool) -> Decision:
        routable = fleet.routable
        if not routable:
            return no_replica(self.name, fleet, fingerprint.session)
        kb = key_bytes(request_key(fingerprint))
        ranked = sorted(
            ((r, hrw_score_bytes(kb, r.name, r.weight)) for r in routable), key=lambda p: p[1], reverse=True
        )
        bound = load_bound(sum(r.load for r in routable), len(routable), self.eps)
        chosen, candidates = walk_ranking(ranked, bound)
        if chosen < 0:  # unreachable for eps >= 0, kept for negative eps
            replica, reason = least_loaded(routable).name, Reason.FALLBACK
        else:
            replica = ranked[chosen][0].name
            reason = Reason.PREFIX_OWNER if chosen == 0 else Reason.OVERFLOW
        candidates.extend(excluded_by_state(fleet))
        return Decision(
            policy=self.name,
            replica=replica,
            reason=reason,
            candidates=tuple(candidates),
            session=fingerprint.session,
        )
