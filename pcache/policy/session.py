"""``session``: rendezvous hashing on the session key, bounded by load (sticky sessions)."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaView
from pcache.policy.base import Decision
from pcache.policy.common import BasePolicy, bounded_hrw
from pcache.policy.keys import request_key

__all__ = ["SessionPolicy"]


class SessionPolicy(BasePolicy):
    """HRW on the session key over routable replicas; the first under ``ceil((1+eps)*mean)`` wins."""

    name = "session"

    def __init__(self, eps: float = 0.25) -> None:
        if eps < 0:
            raise ValueError("eps must be >= 0")
        self.eps = eps

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
        return bounded_hrw(self.name, request_key(fingerprint), fingerprint, fleet, routable, self.eps)
