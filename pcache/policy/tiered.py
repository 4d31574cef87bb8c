"""``tiered`` (the default): Tier-1 prefix owners, sticky session homes, bounded load, and no
replica that would be clearly slower to produce the first token.

1. Tier 1: a request matching a pinned Tier-1 prefix may only go to its pinned replicas; one matching
   a registered prefix goes to the top ``copies`` replicas of the prefix's HRW ranking (within its
   group), ``copies`` growing with the prefix's measured share of requests (all of them for a
   prefix that carries all the traffic; an operator's `pcache pin --copies K` stays at exactly K).
   Otherwise every routable replica is a candidate.
2. The order candidates are tried in: the session's home first (it holds the session's history),
   then the least loaded, ties broken by the HRW ranking of a key: the longest prefix cached
   somewhere beyond what most candidates hold, else the session, else the Tier-1 prefix, else the
   prompt. New sessions and prefixes so spread evenly, and a shared prefix that outgrows one
   replica is shared by the least loaded of the replicas that hold it.
3. The first candidate in that order wins that is under the load bound
   ``max(min_bound, ceil((1 + eps) * mean))`` (requests in flight, the mean counting this request;
   eps 0.75 and min_bound 3 by default) and whose cost is
   within ``1 + cost_eps`` of the cheapest candidate under the bound. Cost = prompt tokens queued
   there for prefill (``ReplicaView.pending_tokens``, 0 when unknown) + ``miss_weight`` x the
   request's tokens not predicted cached there, by an approximate per-replica prefix index like
   ``cache_aware``'s. A miss weighs double: it delays this request and, as new prefill work, those
   queued after it. Blocks most candidates hold, and a Tier-1 prefix on its owners, count as cached
   everywhere: they are (or will be after one miss each), and preferring whoever got them first
   would starve the rest, a replica just added most. If no candidate qualifies, the least loaded
   routable replica outside the set (or in it, when the set is every replica).
   The session's home is judged apart: it keeps the session while within the load bound (one
   request over it when it alone holds ``home_history_tokens`` of the prompt) and while its queue
   does not make it more than ``1 + home_eps`` times as costly as the cheapest other candidate,
   costed with each replica's own predicted match, so the history only the home holds is what
   leaving would recompute.
4. The chosen replica becomes the session's home; a change of home is drift, with its cause.

With a shared KV pool under the replicas (``pool_tokens`` > 0: LMCache, Mooncake Store, the
simulator's ``--pool-blocks``), every block the fleet computed is also in the pool until the pool's
LRU drops it, and any replica loads it from there instead of recomputing. The cost then credits
the blocks the pool holds beyond a candidate's own match: they are not computed (no ``miss_weight``
on them) but loaded, for ``pool_latency_tokens`` (the pool's round trip, in prefill-token
equivalents) plus ``1 - pool_weight`` per token. The home's history is then cheap elsewhere too, so
a session leaves a busy home sooner. The pool's content is predicted from what this router sent
(an LRU of the pool's capacity), like the per-replica index. With ``pool_tokens`` 0 the policy is
blind to the pool.

So a prefix every request shares (the Mooncake trace's first block) costs the same everywhere and
sessions, queues and the bound do the balancing, while a session stays home unless its home is over
the bound or its queue costs far more than its cache saves. Weighing cached overlap against queued work
is what NVIDIA Dynamo's KV router and llm-d's prefix-cache scorer do too.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView, Tier1Prefix
from pcache.hashing import hrw_score_bytes, hrw_scores, key_bytes, load_bound
from pcache.hotprefix import HotPrefixDetector
from pcache.policy.base import Candidate, Decision, DriftCause, DriftEvent, Exclusion, Outcome, Reason
from pcache.policy.cache_aware import correct_index
from pcache.policy.cache_index import ApproximateCacheIndex, CacheMatch, PreciseSource, match_sources
from pcache.policy.common import BasePolicy, excluded_by_state

__all__ = ["PoolIndex", "TieredPolicy"]


class PoolIndex:
    """The blocks a shared KV pool probably holds: an LRU of the pool's capacity over every block
    routed to any replica (the engines write each computed block through to the pool)."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_tokens = capacity_tokens
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def depth(self, blocks: tuple[int, ...] | list[int]) -> int:
        """Leading blocks the pool holds."""
        held = self._blocks
        count = 0
        for block in blocks:
            if block not in held:
                break
            count += 1
        return count

    def insert(self, blocks: tuple[int, ...] | list[int], block_tokens: int) -> None:
        """Book ``blocks`` as written through, evicting the least recently used beyond capacity."""
        held = self._blocks
        for block in blocks:
            if block in held:
                held.move_to_end(block)
            else:
                held[block] = None
        excess = len(held) - max(1, self.capacity_tokens // max(1, block_tokens))
        for _ in range(max(0, excess)):
            held.popitem(last=False)


class TieredPolicy(BasePolicy):
    """Tier-1 owners, session homes (a bounded LRU table) and bounded-load, cache-ranked choice."""

    name = "tiered"

    def __init__(
        self,
        eps: float = 0.75,
        max_sessions: int = 1_000_000,
        cache_index: bool = True,
        default_capacity_tokens: int = 450_000,
        miss_weight: float = 2.0,
        cost_eps: float = 0.25,
        home_eps: float = 1.0,
        home_history_tokens: int = 4096,
        min_bound: int = 3,
        everywhere_fraction: float = 0.5,
        hot_copy_factor: float = 2.0,
        detector: HotPrefixDetector | None = None,
        pool_tokens: int = 0,
        pool_weight: float = 0.7,
        pool_latency_tokens: float = 1500.0,
    ) -> None:
        """``eps``: the load bound's slack. 0.75, not the 0.25 of plain bounded-load hashing: load
        counts requests in flight, mostly decoding, a few per replica, so a 25% bound is one request,
        less than the load's own noise, and it sent requests away from their cache on noise alone
        (docs/decisions.md). ``everywhere_fraction``: share of the candidates that must hold a prefix for
        it to count as cached everywhere. ``hot_copy_factor``: a Tier-1 prefix carrying a share s of
        requests is cached on ``ceil(s * N * hot_copy_factor)`` replicas (at least its registered
        copies). ``detector`` measures those shares (a bounded :class:`HotPrefixDetector` by
        default). ``home_eps``: how much costlier than the cheapest candidate a session's home may be
        (its queue against the history elsewhere recomputed) before the session leaves it.
        ``min_bound``: the bound's floor, in requests in flight. Below about one request per replica
        ``ceil((1 + eps) * mean)`` is 1 or 2, so a home with a request or two decoding counted as
        overloaded and an idle fleet scattered sessions off their caches (measurements in
        docs/decisions.md). ``home_history_tokens``: history only the home
        holds that earns it one request over the bound (4096: more than the 2k-token group prefixes
        of the gsp traces, whose balance the bound keeps; a long conversation's history).
        ``pool_tokens``: capacity of a KV pool the replicas share (0: none, or the policy ignores
        it). ``pool_weight``: a pool-held token's credit against a GPU-held one, and
        ``pool_latency_tokens``: the pool's per-request round trip in prompt tokens of prefill. The
        defaults are the simulator's default costs (2 µs per token loaded against 20 µs computed;
        10 ms at 20 µs per token) times the replayer's ``POOL_COST_FACTOR`` 3: 0.7 and 1500."""
        if eps < 0:
            raise ValueError("eps must be >= 0")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if min_bound < 1:
            raise ValueError("min_bound must be >= 1")
        if pool_tokens < 0 or not 0.0 <= pool_weight <= 1.0 or pool_latency_tokens < 0:
            raise ValueError("pool_tokens and pool_latency_tokens must be >= 0, pool_weight within 0..1")
        self.pool = PoolIndex(pool_tokens) if pool_tokens else None
        self.pool_weight = pool_weight
        self.pool_latency_tokens = pool_latency_tokens
        self.eps = eps
        self.max_sessions = max_sessions
        self.hot_copy_factor = hot_copy_factor
        self.miss_weight = miss_weight
        self.cost_eps = cost_eps
        self.home_eps = home_eps
        self.home_history_tokens = home_history_tokens
        self.min_bound = min_bound
        self.everywhere_fraction = everywhere_fraction
        self.index = ApproximateCacheIndex(default_capacity_tokens) if cache_index else None
        # The engines' own account, per replica while its KV events are live (set by the daemon).
        self.precise: PreciseSource | None = None
        self.detector = detector if detector is not None else HotPrefixDetector()
        self._homes: OrderedDict[str, str] = OrderedDict()
        # Sessions per home, kept with every change of ``_homes``: counting a million-entry table on
        # each status poll took ~260 ms, on the event loop the data plane shares.
        self._home_counts: Counter[str] = Counter()

    def copies_for(self, share: float, pool: int) -> int:
        """Replicas a prefix carrying ``share`` of the requests should be cached on (1..pool)."""
        if pool < 1:
            return 0
        return min(pool, max(1, math.ceil(share * pool * self.hot_copy_factor)))

    def _owner_set(
        self, prefix: Tier1Prefix | None, routable: tuple[ReplicaView, ...]
    ) -> tuple[list[ReplicaView], list[Candidate], Reason]:
        """The Tier-1 candidate set, the routable replicas left out of it, and the in-set reason."""
        if prefix is None:
            return list(routable), [], Reason.PREFIX_OWNER
        if prefix.pinned:
            pinned = set(prefix.pinned)
            inside = [r for r in routable if r.name in pinned]
            not_pinned = [
                Candidate(r.name, 0.0, r.load, Exclusion.NOT_PINNED) for r in routable if r.name not in pinned
            ]
            return inside, not_pinned, Reason.PINNED
        pool = list(routable)
        outside: list[Candidate] = []
        if prefix.group is not None:
            pool = [r for r in routable if r.group == prefix.group]
            outside = [
                Candidate(r.name, 0.0, r.load, Exclusion.OTHER_GROUP)
                for r in routable
                if r.group != prefix.group
            ]
        copies = prefix.copies
        if prefix.source != "pin":  # `pcache pin --copies K` means exactly K; others grow with heat
            copies = max(copies, self.copies_for(self.detector.share(prefix.key), len(pool)))
        if copies >= len(pool):
            return pool, outside, Reason.PREFIX_OWNER
        kb = key_bytes(prefix.key)
        ranked = sorted(pool, key=lambda r: hrw_score_bytes(kb, r.name, r.weight), reverse=True)
        outside.extend(Candidate(r.name, 0.0, r.load, Exclusion.NOT_OWNER) for r in ranked[copies:])
        return ranked[:copies], outside, Reason.PREFIX_OWNER

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
        session = fingerprint.session
        blocks = fingerprint.blocks
        prefix = fleet.tier1.get(fingerprint.tier1) if fingerprint.tier1 else None
        if book:  # measures each registered prefix's share of requests (its copies grow with it)
            self.detector.observe(blocks[: fingerprint.tier1_blocks] if prefix is not None else (), session)
        inside, outside, in_set_reason = self._owner_set(prefix, routable)
        prefix_key = prefix.key if prefix is not None else None

        bound = max(self.min_bound, load_bound(sum(r.load for r in routable), len(routable), self.eps))
        old_home = self._homes.get(session) if session is not None else None
        # A prefix most candidates hold, and a Tier-1 prefix on its owners, count as cached on every
        # candidate: they are (or will be after one miss each), and preferring the replicas that got
        # them first would starve the rest, a replica added by a scale-out most.
        if self.index is not None or self.precise is not None:
            found, everywhere = match_sources(
                self.index, self.precise, fingerprint, inside, self.everywhere_fraction
            )
        else:
            found, everywhere = [CacheMatch(0, 0, "approximate") for _ in inside], 0
        matches = [match.blocks for match in found]
        match_of = {r.name: match for r, match in zip(inside, found, strict=True)}
        if prefix is not None:
            everywhere = max(everywhere, fingerprint.tier1_blocks)
        # The HRW key that breaks load ties: the longest prefix cached somewhere (beyond what is
        # everywhere), so equal choices for a shared prefix agree; else the session, else the Tier-1
        # prefix, else the prompt itself.
        deepest = max(matches, default=0)
        route_key: int | str
        if deepest > everywhere:
            route_key = blocks[deepest - 1]
        elif session is not None:
            route_key = session
        elif prefix_key is not None:
            route_key = prefix_key
        else:
            route_key = blocks[-1] if blocks else 0
        scores = hrw_scores(route_key, inside)
        pooled = self.pool.depth(blocks) if self.pool is not None else 0
        # The order replicas are tried in: the home, then the least loaded, HRW breaking ties.
        ranked = sorted(
            (
                r.name != old_home,
                r.load,
                -score,  # distinct for distinct replicas, so no two tuples compare further
                r.pending_tokens + self._prefill_cost(fingerprint, max(m, everywhere), pooled),
                m,
                r,
            )
            for r, m, score in zip(inside, matches, scores, strict=True)
        )
        under = [item[3] for item in ranked if item[5].load + 1 <= bound]
        limit = min(under) * (1 + self.cost_eps) if under else 0.0
        if self._stays_home(ranked, old_home, bound, fingerprint, prefix is not None):
            chosen = 0
        else:
            chosen = next(
                (i for i, item in enumerate(ranked) if item[5].load + 1 <= bound and item[3] <= limit), -1
            )
        candidates = [
            Candidate(
                r.name,
                -cost,
                r.load,
                None if r.load + 1 <= bound else Exclusion.OVER_LOAD_BOUND,
                match_of[r.name].source,
                match_of[r.name].cached_tokens,
                self._media(match_of[r.name], fingerprint, m, pooled),
            )
            for _, _, _, cost, m, r in ranked
        ]
        replica: ReplicaView
        predicted = 0
        if chosen >= 0:
            replica, predicted = ranked[chosen][5], ranked[chosen][4]
            if in_set_reason is Reason.PINNED:
                reason = Reason.PINNED
            elif replica.name == old_home:
                reason = Reason.SESSION_HOME
            elif chosen > 0:  # a better-placed replica was over the load bound or far busier
                reason = Reason.OVERFLOW
            elif predicted > everywhere:
                reason = Reason.CACHE_MATCH
            elif prefix is None:  # no Tier-1 prefix matched: there is no owner to speak of
                reason = Reason.HRW_CHOICE
            else:
                reason = Reason.PREFIX_OWNER
            candidates.insert(0, candidates.pop(chosen))
        else:
            # Every candidate is over a bound (or none is routable): spill outside the set; when the
            # set is every routable replica, the least busy of them.
            inside_names = {view.name for view in inside}
            pool = [r for r in routable if r.name not in inside_names] or inside
            replica = min(pool, key=lambda r: (r.load, r.pending_tokens))
            reason = Reason.OVERFLOW if inside else Reason.FALLBACK
            candidates = [c for c in candidates if c.replica != replica.name]
            candidates.insert(0, Candidate(replica.name, 0.0, replica.load))
            outside = [c for c in outside if c.replica != replica.name]
            if self.index is not None or self.precise is not None:
                spilled = match_sources(self.index, self.precise, fingerprint, (replica,))[0][0]
                match_of[replica.name] = spilled
                predicted = spilled.blocks
        candidates.extend(outside)
        candidates.extend(excluded_by_state(fleet))

        drift: DriftEvent | None = None
        new_home = session is not None and old_home != replica.name
        if new_home and old_home is not None and session is not None:
            cause = self._drift_cause(old_home, fleet, inside, pinned=bool(prefix and prefix.pinned))
            drift = DriftEvent(session, old_home, replica.name, cause)
        if book:
            if self.index is not None:
                self.index.insert(replica, blocks, fingerprint.block_tokens)
            if self.pool is not None:  # the engines write every computed block through to the pool
                self.pool.insert(blocks, fingerprint.block_tokens)
            if session is not None:
                homes, counts = self._homes, self._home_counts
                if old_home != replica.name:
                    if old_home is not None:
                        self._uncount(old_home)
                    counts[replica.name] += 1
                homes[session] = replica.name
                homes.move_to_end(session)
                if len(homes) > self.max_sessions:
                    self._uncount(homes.popitem(last=False)[1])
        return Decision(
            policy=self.name,
            replica=replica.name,
            reason=reason,
            candidates=tuple(candidates),
            session=session,
            prefix_key=prefix_key,
            tier1=prefix.name if prefix is not None else None,
            predicted_cached_blocks=predicted,
            drift=drift,
            new_home=new_home,
            predicted_cached_tokens=(
                match_of[replica.name].cached_tokens if replica.name in match_of else None
            ),
        )

    def _prefill_cost(self, fingerprint: Fingerprint, matched: int, pooled: int) -> float:
        """What serving the request costs a replica holding ``matched`` leading blocks, in prompt
        tokens: ``miss_weight`` per token computed, and for the blocks the pool holds beyond the
        match, its round trip plus ``1 - pool_weight`` per token loaded."""
        tokens, bt = fingerprint.prompt_tokens, fingerprint.block_tokens
        missing = max(0, tokens - matched * bt)
        loaded = min(missing, max(0, pooled - matched) * bt)
        cost = self.miss_weight * (missing - loaded)
        if loaded:
            cost += self.pool_latency_tokens + (1.0 - self.pool_weight) * loaded
        return cost

    def _media(
        self, match: CacheMatch, fingerprint: Fingerprint, matched: int, pooled: int
    ) -> tuple[tuple[str, int], ...]:
        """A candidate's predicted cached tokens by medium, with the pool's share beyond its own."""
        media = dict(match.tokens_by_medium)
        if pooled > matched:
            tokens, bt = fingerprint.prompt_tokens, fingerprint.block_tokens
            loaded = min(max(0, tokens - matched * bt), (pooled - matched) * bt)
            if loaded:
                media["pool"] = media.get("pool", 0) + loaded
        return tuple(sorted(media.items()))

    def _stays_home(
        self,
        ranked: list[tuple[bool, int, float, float, int, ReplicaView]],
        old_home: str | None,
        bound: int,
        fingerprint: Fingerprint,
        tier1: bool,
    ) -> bool:
        """Whether the session's home keeps it: within the load bound, and not made by its queue
        more than ``1 + home_eps`` times as costly as the cheapest other replica under the bound.

        Costs here use each replica's own predicted match (the Tier-1 prefix counting as cached on
        its owners), not the everywhere credit of the general ranking: a conversation's history is
        held by its home (and, after a move, by a former home too), and crediting it to every
        candidate made leaving look free. A home that alone holds at least ``home_history_tokens``
        of the prompt may go one request over the bound (recomputing that history elsewhere costs
        more than one more request in flight). Only the home's load or queue can make it leave, so
        such a move is honestly overload.
        """
        if old_home is None or not ranked or ranked[0][5].name != old_home:
            return False
        home, home_match = ranked[0][5], ranked[0][4]
        bt = fingerprint.block_tokens
        floor = fingerprint.tier1_blocks if tier1 else 0
        pooled = self.pool.depth(fingerprint.blocks) if self.pool is not None else 0
        held_elsewhere = max((max(item[4], floor) for item in ranked[1:]), default=floor)
        if pooled:  # what the pool holds is cheap anywhere: only the rest is the home's own history
            held_elsewhere = max(held_elsewhere, min(pooled, home_match))
        slack = 1 if (home_match - held_elsewhere) * bt >= self.home_history_tokens else 0
        if home.load + 1 > bound + slack:
            return False

        def miss(matched: int) -> float:
            return self._prefill_cost(fingerprint, max(matched, floor), pooled)

        others = [item[5].pending_tokens + miss(item[4]) for item in ranked[1:] if item[5].load + 1 <= bound]
        if not others:
            return True
        limit = (1 + self.home_eps) * min(others)
        return home.pending_tokens + miss(home_match) <= limit or miss(home_match) > limit

    @staticmethod
    def _drift_cause(
        old_home: str, fleet: FleetView, inside: list[ReplicaView], *, pinned: bool = False
    ) -> DriftCause:
        """Why a session left ``old_home``; a home over the load bound or too busy is OVERLOAD.

        A healthy home outside the candidate set is PIN when the prefix is pinned, else TIER1 (the
        home is not among the prefix's owners, e.g. the session had spilled out of its group)."""
        view = fleet.by_name(old_home)
        if view is None or view.state in (ReplicaState.REMOVED, ReplicaState.JOINING):
            return DriftCause.MEMBERSHIP
        if view.state in (ReplicaState.DRAINING, ReplicaState.DRAINED):
            return DriftCause.DRAIN
        if view.state is ReplicaState.UNHEALTHY:
            return DriftCause.FAILURE
        if all(r.name != old_home for r in inside):
            return DriftCause.PIN if pinned else DriftCause.TIER1
        return DriftCause.OVERLOAD

    def observe(self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome) -> None:
        """Correct the cache index from what the engine reported."""
        if self.index is not None:
            correct_index(self.index, fingerprint, decision, outcome)

    def _uncount(self, home: str) -> None:
        counts = self._home_counts
        counts[home] -= 1
        if counts[home] <= 0:
            del counts[home]

    def adopt_home(self, session: str, replica: str) -> None:
        """Take a session's home as another router sharing the state chose it: the session's next
        turn through this router goes home too (judged like any home: load bound, cost)."""
        homes = self._homes
        old = homes.get(session)
        if old != replica:
            if old is not None:
                self._uncount(old)
            self._home_counts[replica] += 1
        homes[session] = replica
        homes.move_to_end(session)
        if len(homes) > self.max_sessions:
            self._uncount(homes.popitem(last=False)[1])

    def session_homes(self) -> dict[str, int]:
        """Sessions homed on each replica: O(replicas), from counts kept as homes change."""
        return dict(self._home_counts)

    def forget_replica(self, name: str) -> None:
        """Forget a removed replica's cache and sessions (they get new homes without drift)."""
        if self.index is not None:
            self.index.forget(name)
        for session in [s for s, home in self._homes.items() if home == name]:
            del self._homes[session]
        self._home_counts.pop(name, None)
