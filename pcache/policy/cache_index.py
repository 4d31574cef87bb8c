"""An approximate prefix-cache index over a fleet: what each replica probably holds.

Per replica an LRU set of block hashes sized to its KV cache; one shared map from block hash to a
bitmask of replicas answers "how many leading blocks of this prompt does each replica hold" in one
walk over the prompt's blocks, whatever the number of replicas. Booking a routed request inserts its
blocks on the chosen replica; engine feedback (``correct``) trims what turned out to be gone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import islice

from pcache.fleet_view import ReplicaView

__all__ = ["ApproximateCacheIndex"]


class ApproximateCacheIndex:
    """Predicted cached blocks per replica, with LRU eviction at each replica's capacity."""

    def __init__(self, default_capacity_tokens: int = 450_000) -> None:
        self.default_capacity_tokens = default_capacity_tokens
        self._owners: dict[int, int] = {}  # block hash -> bitmask of replicas predicted to hold it
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._bit: dict[str, int] = {}

    def size(self, name: str) -> int:
        """Blocks predicted to be cached on ``name``."""
        lru = self._lru.get(name)
        return 0 if lru is None else len(lru)

    def matched_blocks(self, blocks: Sequence[int], replicas: Sequence[ReplicaView]) -> list[int]:
        """Predicted cached leading blocks on each replica, in the order given."""
        bit_of = self._bit
        bits = [bit_of.get(r.name, 0) for r in replicas]
        alive = 0
        for bit in bits:
            alive |= bit
        masks: list[int] = []
        owners = self._owners
        for block in blocks:
            alive &= owners.get(block, 0)
            if not alive:
                break
            masks.append(alive)
        if not masks:
            return [0] * len(bits)
        matches: list[int] = []
        for bit in bits:
            count = 0
            if bit:
                for mask in masks:
                    if not mask & bit:
                        break
                    count += 1
            matches.append(count)
        return matches

    def insert(self, replica: ReplicaView, blocks: Sequence[int], block_tokens: int) -> None:
        """Book ``blocks`` as cached on ``replica``, evicting its least recently used beyond capacity."""
        bit = self._bit_of(replica.name)
        lru = self._lru[replica.name]
        owners = self._owners
        for block in blocks:
            if block in lru:
                lru.move_to_end(block)
            else:
                lru[block] = None
                owners[block] = owners.get(block, 0) | bit
        tokens = replica.cache_capacity_tokens or self.default_capacity_tokens
        capacity = max(1, tokens // max(1, block_tokens))
        while len(lru) > capacity:
            evicted, _ = lru.popitem(last=False)
            self._drop_owner(evicted, bit)

    def discard(self, name: str, blocks: Sequence[int]) -> None:
        """Forget ``blocks`` on ``name`` (a request that failed never filled them)."""
        lru = self._lru.get(name)
        bit = self._bit.get(name)
        if lru is None or bit is None:
            return
        for block in blocks:
            if block in lru:
                del lru[block]
                self._drop_owner(block, bit)

    def evict_oldest(self, name: str, count: int, keep: Sequence[int] = ()) -> None:
        """Drop the ``count`` least recently used blocks of ``name`` (not those in ``keep``).

        Used when the engine reports fewer cached tokens than predicted: under LRU, the oldest
        entries are the ones that went first.
        """
        lru = self._lru.get(name)
        bit = self._bit.get(name)
        if lru is None or bit is None or count <= 0:
            return
        kept = set(keep)
        for block in list(islice((b for b in lru if b not in kept), count)):
            del lru[block]
            self._drop_owner(block, bit)

    def forget(self, name: str) -> None:
        """Drop everything predicted for a replica that left the fleet."""
        bit = self._bit.pop(name, None)
        lru = self._lru.pop(name, None)
        if bit is None or lru is None:
            return
        for block in lru:
            self._drop_owner(block, bit)

    def _bit_of(self, name: str) -> int:
        bit = self._bit.get(name)
        if bit is None:
            used = 0
            for taken in self._bit.values():
                used |= taken
            bit = 1
            while used & bit:
                bit <<= 1
            self._bit[name] = bit
            self._lru[name] = OrderedDict()
        return bit

    def _drop_owner(self, block: int, bit: int) -> None:
        mask = self._owners.get(block, 0) & ~bit
        if mask:
            self._owners[block] = mask
        else:
            self._owners.pop(block, None)
