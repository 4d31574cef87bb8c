"""``cache_aware``: SGLang-router style, an approximate prefix index per replica plus load thresholds.

Each replica's index is an LRU set of block hashes sized to its KV cache; one shared map from block
hash to a bitmask of replicas answers "how many leading blocks does each replica hold" in one walk
over the request's blocks (:class:`~pcache.policy.cache_index.ApproximateCacheIndex`). The rule
follows sgl-router's ``cache_aware`` policy: when the fleet is
imbalanced (max - min load > ``balance_abs_threshold`` and max > min * ``balance_rel_threshold``)
take the least loaded replica; otherwise the longest match if its match ratio exceeds
``cache_threshold``, else the replica with the smallest index (the most room). A replica whose
engine's KV events are live is matched on them instead (``precise``, set by the daemon).
"""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaView
from pcache.hashing import hrw_score_bytes, key_bytes
from pcache.policy.base import Candidate, Decision, Outcome, Reason
from pcache.policy.cache_index import ApproximateCacheIndex, PreciseSource, match_sources
from pcache.policy.common import BasePolicy, excluded_by_state
from pcache.policy.keys import request_key

__all__ = ["CacheAwarePolicy", "correct_index"]


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
        self.index = ApproximateCacheIndex(default_capacity_tokens)
        # The engines' own account, per replica while its KV events are live (set by the daemon).
        self.precise: PreciseSource | None = None

    def matched_blocks(self, blocks: tuple[int, ...], replicas: tuple[ReplicaView, ...]) -> list[int]:
        """Predicted cached leading blocks on each replica, in the order given."""
        return self.index.matched_blocks(blocks, replicas)

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
        blocks = fingerprint.blocks
        found = match_sources(self.index, self.precise, fingerprint, routable)[0]
        matches = [match.blocks for match in found]
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
                sizes = [self.index.size(r.name) for r in routable]
                order.sort(key=lambda i: (sizes[i], loads[i], -tie[i]))
                reason = Reason.FALLBACK
        chosen = routable[order[0]]
        candidates = [
            Candidate(
                routable[i].name,
                float(matches[i]),
                loads[i],
                cache_source=found[i].source,
                cached_tokens=found[i].cached_tokens,
                tokens_by_medium=tuple(sorted(found[i].tokens_by_medium.items())),
            )
            for i in order
        ]
        candidates.extend(excluded_by_state(fleet))
        if book:
            self.index.insert(chosen, blocks, fingerprint.block_tokens)
        return Decision(
            policy=self.name,
            replica=chosen.name,
            reason=reason,
            candidates=tuple(candidates),
            session=fingerprint.session,
            predicted_cached_blocks=matches[order[0]],
            predicted_cached_tokens=found[order[0]].cached_tokens,
        )

    def observe(self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome) -> None:
        """Correct the index from what the engine reported (see :func:`correct_index`)."""
        correct_index(self.index, fingerprint, decision, outcome)

    def forget_replica(self, name: str) -> None:
        self.index.forget(name)


def correct_index(
    index: ApproximateCacheIndex, fingerprint: Fingerprint, decision: Decision, outcome: Outcome
) -> None:
    """Learn from an outcome: a failed request never filled the blocks it was predicted to add; an
    engine that cached fewer blocks than predicted had evicted as many of its oldest entries."""
    predicted = decision.predicted_cached_blocks if decision.replica == outcome.replica else 0
    if not outcome.ok:
        index.discard(outcome.replica, fingerprint.blocks[predicted:])
        return
    if outcome.cached_tokens is None:
        return
    missing = predicted - outcome.cached_tokens // max(1, fingerprint.block_tokens)
    index.evict_oldest(outcome.replica, missing, keep=fingerprint.blocks)
