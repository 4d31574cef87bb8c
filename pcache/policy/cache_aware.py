"""``cache_aware``: SGLang-router style, an approximate prefix index per replica plus load thresholds.

Each replica's index is an LRU set of block hashes sized to its KV cache; one shared map from block
hash to a bitmask of replicas answers "how many leading blocks does each replica hold" in one walk
over the request's blocks. The rule follows sgl-router's ``cache_aware`` policy: when the fleet is
imbalanced (max - min load > ``balance_abs_threshold`` and max > min * ``balance_rel_threshold``)
take the least loaded replica; otherwise the longest match if its match ratio exceeds
``cache_threshold``, else the replica with the smallest index (the most room).
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaView
from pcache.hashing import hrw_score_bytes, key_bytes
from pcache.policy.base import Candidate, Decision, Outcome, Reason
from pcache.policy.common import BasePolicy, excluded_by_state, no_replica
from pcache.policy.keys import request_key

__all__ = ["CacheAwarePolicy"]


class CacheAwarePolicy(BasePolicy):
    """Longest predicted cache match, unless the fleet is out of balance."""

    name = "cache_aware"

    def __init__(
        self,
        cache_threshold: float = 0.5,
        balance_abs_threshold: int = 32,
        balance_rel_threshold: float = 1.0001,
        default_capacity_tokens: int = 450_000,
    ) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.default_capacity_tokens = default_capacity_tokens
        self._owners: dict[int, int] = {}  # block hash -> bitmask of replicas predicted to hold it
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._bit: dict[str, int] = {}

    def _bit_of(self, name: str) -> int:
        bit = self._bit.get(name)
        if bit is None:
            used = 0
            for b in self._bit.values():
                used |= b
            bit = 1
            while used & bit:
                bit <<= 1
            self._bit[name] = bit
            self._lru[name] = OrderedDict()
        return bit

    def matched_blocks(self, blocks: tuple[int, ...], replicas: tuple[ReplicaView, ...]) -> list[int]:
        """Predicted cached leading blocks on each replica, in the order given."""
        bits = [self._bit.get(r.name, 0) for r in replicas]
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

    def _decide(self, fingerprint: Fingerprint, fleet: FleetView, book: bool) -> Decision:
        routable = fleet.routable
        if not routable:
            return no_replica(self.name, fleet, fingerprint.session)
        blocks = fingerprint.blocks
        matches = self.matched_blocks(blocks, routable)
        loads = [r.load for r in routable]
        max_load, min_load = max(loads), min(loads)
        kb = key_bytes(request_key(fingerprint))
        tie = [hrw_score_bytes(kb, r.name) for r in routable]
        order = list(range(len(routable)))
        imbalanced = (
            max_load - min_load > self.balance_abs_threshold
            and max_load > min_load * self.balance_rel_threshold
        )
        if imbalanced:
            order.sort(key=lambda i: (loads[i], -matches[i], -tie[i]))
            reason = Reason.LEAST_LOAD
        else:
            order.sort(key=lambda i: (-matches[i], loads[i], -tie[i]))
            best = matches[order[0]]
            if blocks and best / len(blocks) > self.cache_threshold:
                reason = Reason.CACHE_MATCH
            else:
                sizes = [len(self._lru.get(r.name, ())) for r in routable]
                order.sort(key=lambda i: (sizes[i], loads[i], -tie[i]))
                reason = Reason.FALLBACK
        chosen = routable[order[0]]
        candidates = [Candidate(routable[i].name, float(matches[i]), loads[i]) for i in order]
        candidates.extend(excluded_by_state(fleet))
        if book:
            self._insert(chosen, fingerprint)
        return Decision(
            policy=self.name,
            replica=chosen.name,
            reason=reason,
            candidates=tuple(candidates),
            session=fingerprint.session,
            predicted_cached_blocks=matches[order[0]],
        )

    def _capacity_blocks(self, replica: ReplicaView, block_tokens: int) -> int:
        tokens = replica.cache_capacity_tokens or self.default_capacity_tokens
        return max(1, tokens // max(1, block_tokens))

    def _insert(self, replica: ReplicaView, fingerprint: Fingerprint) -> None:
        bit = self._bit_of(replica.name)
        lru = self._lru[replica.name]
        owners = self._owners
        for block in fingerprint.blocks:
            if block in lru:
                lru.move_to_end(block)
            else:
                lru[block] = None
                owners[block] = owners.get(block, 0) | bit
        capacity = self._capacity_blocks(replica, fingerprint.block_tokens)
        while len(lru) > capacity:
            self._evict_oldest(lru, bit)

    def _evict_oldest(self, lru: OrderedDict[int, None], bit: int) -> int:
        block, _ = lru.popitem(last=False)
        self._drop_owner(block, bit)
        return block

    def observe(self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome) -> None:
        """Correct the index from what the engine reported.

        A failed request never filled the blocks it was predicted to add. An engine that cached
        fewer blocks than predicted had evicted them; under LRU the oldest entries went first, so as
        many of the oldest entries (outside this request) are dropped from the prediction.
        """
        lru = self._lru.get(outcome.replica)
        bit = self._bit.get(outcome.replica)
        if lru is None or bit is None:
            return
        blocks = fingerprint.blocks
        predicted = decision.predicted_cached_blocks if decision.replica == outcome.replica else 0
        if not outcome.ok:
            for block in blocks[predicted:]:
                if block in lru:
                    del lru[block]
                    self._drop_owner(block, bit)
            return
        if outcome.cached_tokens is None:
            return
        missing = predicted - outcome.cached_tokens // max(1, fingerprint.block_tokens)
        if missing <= 0:
            return
        request_blocks = set(blocks)
        stale = list(islice((b for b in lru if b not in request_blocks), missing))
        for block in stale:
            del lru[block]
            self._drop_owner(block, bit)

    def _drop_owner(self, block: int, bit: int) -> None:
        mask = self._owners.get(block, 0) & ~bit
        if mask:
            self._owners[block] = mask
        else:
            self._owners.pop(block, None)

    def forget_replica(self, name: str) -> None:
        bit = self._bit.pop(name, None)
        lru = self._lru.pop(name, None)
        if bit is None or lru is None:
            return
        while lru:
            self._evict_oldest(lru, bit)
