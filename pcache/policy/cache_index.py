"""An approximate prefix-cache index over a fleet: what each replica probably holds.

Per replica an LRU set of block hashes sized to its KV cache; one shared map from block hash to a
bitmask of replicas answers "how many leading blocks of this prompt does each replica hold" in one
walk over the prompt's blocks, whatever the number of replicas. Booking a routed request inserts its
blocks on the chosen replica; engine feedback (``correct``) trims what turned out to be gone.

:func:`match_sources` puts the precise index (the engines' KV events, :mod:`pcache.kv`) in front:
a replica whose events are live is matched on what its engine reported, in its own tokens; the
others on the approximate index. Each match says which source it came from.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import ReplicaView
from pcache.kv.index import PreciseMatch

__all__ = ["ApproximateCacheIndex", "CacheMatch", "PreciseBlocks", "PreciseSource", "match_sources"]


class PreciseBlocks(Protocol):
    """One replica's precise index (:class:`pcache.kv.index.ReplicaBlocks`, or a replayed
    replica's own cache)."""

    @property
    def block_size(self) -> int | None: ...

    def match(self, keys: Sequence[int], weights: Mapping[str, float]) -> PreciseMatch: ...


class PreciseSource(Protocol):
    """Where live per-replica precise indexes come from (:class:`pcache.kv.hub.KvEventsHub`)."""

    @property
    def medium_weights(self) -> Mapping[str, float]: ...

    def live(self, name: str) -> PreciseBlocks | None:
        """The replica's precise index while its events are live, else None."""
        ...


@dataclass(frozen=True, slots=True)
class CacheMatch:
    """One replica's predicted match for a request.

    ``blocks`` is in the fingerprint's blocks (what the policy's cost uses; a precise match is
    converted from its medium-weighted tokens); ``cached_tokens`` is the prediction of what the
    engine will report cached; ``source`` is ``precise`` or ``approximate``.
    """

    blocks: int
    cached_tokens: int
    source: str
    tokens_by_medium: Mapping[str, int] = field(default_factory=dict)


def match_sources(
    index: ApproximateCacheIndex | None,
    precise: PreciseSource | None,
    fingerprint: Fingerprint,
    replicas: Sequence[ReplicaView],
    common: float = 1.0,
) -> tuple[list[CacheMatch], int]:
    """Each replica's match from its live source, and the approximate index's common depth."""
    blocks = fingerprint.blocks
    if index is not None:
        approximate, everywhere = index.match(blocks, replicas, common)
    else:
        approximate, everywhere = [0] * len(replicas), 0
    tokens = fingerprint.engine_tokens
    matches: list[CacheMatch] = []
    for replica, approx in zip(replicas, approximate, strict=True):
        live = precise.live(replica.name) if precise is not None and tokens is not None else None
        if live is not None and not live.block_size:
            matches.append(CacheMatch(0, 0, "precise"))  # live, and no block stored yet
        elif live is not None and live.block_size and tokens is not None and precise is not None:
            found = live.match(tokens.keys(live.block_size), precise.medium_weights)
            credit = int(found.weighted_tokens) // max(1, fingerprint.block_tokens)
            matches.append(
                CacheMatch(
                    blocks=min(len(blocks), credit),
                    cached_tokens=found.cached_tokens(len(tokens)),
                    source="precise",
                    tokens_by_medium=found.tokens_by_medium,
                )
            )
        else:
            matches.append(CacheMatch(approx, fingerprint.tokens_in(approx), "approximate"))
    return matches, everywhere


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
        return self.match(blocks, replicas)[0]

    def match(
        self, blocks: Sequence[int], replicas: Sequence[ReplicaView], common: float = 1.0
    ) -> tuple[list[int], int]:
        """Matched leading blocks per replica, and how many leading blocks at least a ``common``
        fraction of the replicas hold (a prefix cached nearly everywhere)."""
        bit_of = self._bit
        bits = [bit_of.get(r.name, 0) for r in replicas]
        alive = 0
        for bit in bits:
            alive |= bit
        needed = max(1, math.ceil(common * len(bits)))
        owners = self._owners
        depth_of: dict[int, int] = {}  # bit -> matched depth, for bits that dropped out
        depth = common_depth = 0
        for block in blocks:
            held = alive & owners.get(block, 0)
            dropped = alive & ~held
            while dropped:
                low = dropped & -dropped
                depth_of[low] = depth
                dropped ^= low
            alive = held
            if not alive:
                break
            depth += 1
            if alive.bit_count() >= needed:
                common_depth = depth
        return [depth_of.get(bit, depth) if bit else 0 for bit in bits], common_depth

    def insert(self, replica: ReplicaView, blocks: Sequence[int], block_tokens: int) -> None:
        """Book ``blocks`` as cached on ``replica``, evicting its least recently used beyond capacity."""
        name = replica.name
        bit = self._bit.get(name) or self._bit_of(name)
        lru = self._lru[name]
        owners = self._owners
        touch = lru.move_to_end
        for block in blocks:
            if block in lru:
                touch(block)
            else:
                lru[block] = None
                owners[block] = owners.get(block, 0) | bit
        tokens = replica.cache_capacity_tokens or self.default_capacity_tokens
        excess = len(lru) - max(1, tokens // max(1, block_tokens))
        if excess > 0:
            evict = lru.popitem
            keep = ~bit
            for _ in range(excess):
                block, _ = evict(last=False)
                mask = owners.get(block, 0) & keep
                if mask:
                    owners[block] = mask
                else:
                    owners.pop(block, None)

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
