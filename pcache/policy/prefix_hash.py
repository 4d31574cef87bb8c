"""``prefix_hash``: rendezvous hashing on a prefix key that skips blocks shared by nearly everyone.

A key built on the first block alone sends all traffic to one replica when every prompt starts the
same way (the Mooncake trace's block 0), so the key is the first block past the leading blocks that
carry at least ``skip_share`` of all requests (measured online), or past ``skip_blocks`` if set.
"""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaView
from pcache.hotprefix import HotPrefixDetector
from pcache.policy.base import Decision
from pcache.policy.common import BasePolicy, bounded_hrw

__all__ = ["PrefixHashPolicy"]


class PrefixHashPolicy(BasePolicy):
    """HRW on the prefix key over routable replicas, bounded by load."""

    name = "prefix_hash"

    def __init__(
        self,
        eps: float = 0.25,
        skip_blocks: int | None = None,
        skip_share: float = 0.5,
        detector: HotPrefixDetector | None = None,
    ) -> None:
        if eps < 0:
            raise ValueError("eps must be >= 0")
        self.eps = eps
        self.skip_blocks = skip_blocks
        self.skip_share = skip_share
        self._detector = detector if detector is not None else HotPrefixDetector()

    def prefix_key(self, fingerprint: Fingerprint, book: bool = False) -> int:
        """The block the prefix key is taken from: the first one not shared by nearly everyone."""
        blocks = fingerprint.blocks
        if not blocks:
            return 0
        if self.skip_blocks is not None:
            skip = self.skip_blocks
        else:
            if book:
                self._detector.observe(blocks, fingerprint.session)
            skip = self._detector.shared_depth(blocks, self.skip_share)
        return blocks[min(skip, len(blocks) - 1)]

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
        key = self.prefix_key(fingerprint, book)
        return bounded_hrw(self.name, key, fingerprint, fleet, routable, self.eps, prefix_key=key)
