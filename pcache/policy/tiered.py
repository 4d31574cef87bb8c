"""``tiered`` (the default): Tier-1 prefix owners, then session homes, then bounded-load spill.

1. Tier 1: a request matching a pinned Tier-1 prefix may only go to its pinned replicas; one matching
   a registered or auto-detected hot prefix goes to the top ``copies`` replicas of the prefix's HRW
   ranking (within its group), ``copies`` growing with the prefix's share of load, so a prefix that
   carries all traffic spreads over every replica and sessions do the balancing. Otherwise every
   routable replica is a candidate.
2. Tier 2: a session whose home is a candidate and under the load bound goes home.
3. Otherwise the first candidate in the HRW ranking of the session key (the prefix key without a
   session) under ``ceil((1 + eps) * mean_load)``; if every candidate is over the bound, the least
   loaded routable replica outside the set. The chosen replica becomes the session's home; a change
   of home is reported as drift with its cause.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView, Tier1Prefix
from pcache.hashing import hrw_score_bytes, key_bytes, load_bound
from pcache.hotprefix import HotPrefixDetector
from pcache.policy.base import Candidate, Decision, DriftCause, DriftEvent, Exclusion, Reason
from pcache.policy.common import BasePolicy, excluded_by_state, least_loaded, no_replica, walk_ranking

__all__ = ["TieredPolicy"]


class TieredPolicy(BasePolicy):
    """Tier-1 owners, session homes (a bounded LRU table) and bounded-load rendezvous hashing."""

    name = "tiered"

    def __init__(
        self,
        eps: float = 0.25,
        max_sessions: int = 1_000_000,
        auto_hot: bool = True,
        hot_min_sessions: int = 8,
        hot_copy_factor: float = 2.0,
        hot_max_entries: int = 200_000,
        detector: HotPrefixDetector | None = None,
    ) -> None:
        if eps < 0:
            raise ValueError("eps must be >= 0")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.eps = eps
        self.max_sessions = max_sessions
        self.auto_hot = auto_hot
        self.hot_copy_factor = hot_copy_factor
        self.detector = (
            detector
            if detector is not None
            else HotPrefixDetector(min_sessions=hot_min_sessions, max_entries=hot_max_entries)
        )
        self._homes: OrderedDict[str, str] = OrderedDict()

    def copies_for(self, share: float, pool: int) -> int:
        """Replicas a prefix carrying ``share`` of the load should be cached on (1..pool)."""
        if pool < 1:
            return 0
        return min(pool, max(1, math.ceil(share * pool * self.hot_copy_factor)))

    def _owner_set(
        self, prefix: Tier1Prefix | None, auto_key: int | None, routable: tuple[ReplicaView, ...]
    ) -> tuple[list[ReplicaView], list[Candidate], Reason]:
        """The Tier-1 candidate set, the routable replicas left out of it, and the in-set reason."""
        if prefix is None and auto_key is None:
            return list(routable), [], Reason.PREFIX_OWNER
        if prefix is not None and prefix.pinned:
            pinned = set(prefix.pinned)
            inside = [r for r in routable if r.name in pinned]
            outside = [
                Candidate(r.name, 0.0, r.load, Exclusion.NOT_PINNED) for r in routable if r.name not in pinned
            ]
            return inside, outside, Reason.PINNED
        outside = []
        pool = list(routable)
        if prefix is not None:
            key = prefix.key
            if prefix.group is not None:
                pool = [r for r in routable if r.group == prefix.group]
                outside = [
                    Candidate(r.name, 0.0, r.load, Exclusion.OTHER_GROUP)
                    for r in routable
                    if r.group != prefix.group
                ]
            copies = max(prefix.copies, self.copies_for(self.detector.share(key), len(pool)))
        else:
            assert auto_key is not None
            key = auto_key
            copies = self.copies_for(self.detector.share(key), len(pool))
        if copies >= len(pool):
            return pool, outside, Reason.PREFIX_OWNER
        kb = key_bytes(key)
        ranked = sorted(pool, key=lambda r: hrw_score_bytes(kb, r.name, r.weight), reverse=True)
        outside.extend(Candidate(r.name, 0.0, r.load, Exclusion.NOT_OWNER) for r in ranked[copies:])
        return ranked[:copies], outside, Reason.PREFIX_OWNER

    def _decide(self, fingerprint: Fingerprint, fleet: FleetView, book: bool) -> Decision:
        session = fingerprint.session
        routable = fleet.routable
        if not routable:
            return no_replica(self.name, fleet, session)
        blocks = fingerprint.blocks

        prefix = fleet.tier1.get(fingerprint.tier1) if fingerprint.tier1 else None
        depth = 0
        if self.auto_hot:
            depth = self.detector.observe(blocks, session) if book else self.detector.depth(blocks)
        auto_key = blocks[depth - 1] if prefix is None and depth > 0 else None
        inside, outside, in_set_reason = self._owner_set(prefix, auto_key, routable)
        prefix_key = prefix.key if prefix is not None else auto_key
        tier1_name = prefix.name if prefix is not None else None
        if auto_key is not None:
            tier1_name = f"auto:{auto_key:016x}"

        bound = load_bound(sum(r.load for r in routable), len(routable), self.eps)
        if session is not None:
            route_key: int | str = session
        elif prefix_key is not None:
            route_key = prefix_key
        else:
            route_key = blocks[-1] if blocks else 0
        kb = key_bytes(route_key)
        ranked = sorted(
            ((r, hrw_score_bytes(kb, r.name, r.weight)) for r in inside), key=lambda p: p[1], reverse=True
        )
        chosen_index, candidates = walk_ranking(ranked, bound)

        old_home = self._homes.get(session) if session is not None else None
        replica: str | None = None
        reason = Reason.FALLBACK
        if old_home is not None:
            for i, (view, _) in enumerate(ranked):
                if view.name == old_home:
                    if candidates[i].excluded is None:
                        replica = old_home
                        reason = Reason.PINNED if in_set_reason is Reason.PINNED else Reason.SESSION_HOME
                        candidates.insert(0, candidates.pop(i))
                    break
        if replica is None and chosen_index >= 0:
            replica = ranked[chosen_index][0].name
            if in_set_reason is Reason.PINNED:
                reason = Reason.PINNED
            else:
                reason = Reason.PREFIX_OWNER if chosen_index == 0 else Reason.OVERFLOW
        if replica is None:
            # Every candidate is over the bound (or none is routable): spill outside the set. When the
            # set is every routable replica someone is always under the bound, so this pool is not empty.
            inside_names = {view.name for view in inside}
            spill = least_loaded([r for r in routable if r.name not in inside_names])
            replica = spill.name
            reason = Reason.OVERFLOW if inside else Reason.FALLBACK
            candidates.insert(0, Candidate(spill.name, 0.0, spill.load))
            outside = [c for c in outside if c.replica != replica]

        candidates.extend(outside)
        candidates.extend(excluded_by_state(fleet))

        drift: DriftEvent | None = None
        new_home = False
        if session is not None and old_home != replica:
            new_home = True
            if old_home is not None:
                cause = self._drift_cause(old_home, fleet, inside)
                drift = DriftEvent(session, old_home, replica, cause)
        if book and session is not None:
            homes = self._homes
            homes[session] = replica
            homes.move_to_end(session)
            if len(homes) > self.max_sessions:
                homes.popitem(last=False)
        return Decision(
            policy=self.name,
            replica=replica,
            reason=reason,
            candidates=tuple(candidates),
            session=session,
            prefix_key=prefix_key,
            tier1=tier1_name,
            drift=drift,
            new_home=new_home,
        )

    @staticmethod
    def _drift_cause(old_home: str, fleet: FleetView, inside: list[ReplicaView]) -> DriftCause:
        view = fleet.by_name(old_home)
        if view is None or view.state is ReplicaState.REMOVED:
            return DriftCause.MEMBERSHIP
        if view.state in (ReplicaState.DRAINING, ReplicaState.DRAINED):
            return DriftCause.DRAIN
        if view.state is ReplicaState.UNHEALTHY:
            return DriftCause.FAILURE
        if all(r.name != old_home for r in inside):
            return DriftCause.PIN
        return DriftCause.OVERLOAD

    def session_homes(self) -> dict[str, int]:
        return dict(Counter(self._homes.values()))

    def forget_replica(self, name: str) -> None:
        """Forget the sessions homed on a removed replica (they get new homes without drift)."""
        for session in [s for s, home in self._homes.items() if home == name]:
            del self._homes[session]
