"""What every policy shares: the base class, exclusions from replica state, the empty decision,
and walking a ranking under the load bound."""

from __future__ import annotations

from collections.abc import Sequence

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView
from pcache.hashing import hrw_score_bytes, key_bytes, load_bound
from pcache.policy.base import Candidate, Decision, Exclusion, Outcome, Reason

__all__ = [
    "STATE_EXCLUSION",
    "BasePolicy",
    "bounded_hrw",
    "excluded_by_state",
    "least_loaded",
    "no_replica",
    "walk_ranking",
]

STATE_EXCLUSION: dict[ReplicaState, Exclusion] = {
    ReplicaState.UNHEALTHY: Exclusion.UNHEALTHY,
    ReplicaState.JOINING: Exclusion.JOINING,
    ReplicaState.DRAINING: Exclusion.DRAINING,
    ReplicaState.DRAINED: Exclusion.DRAINED,
    ReplicaState.REMOVED: Exclusion.REMOVED,
}


def excluded_by_state(fleet: FleetView) -> list[Candidate]:
    """A candidate (score 0) for every replica that is not routable, with its state as the reason."""
    return [
        Candidate(r.name, 0.0, r.load, STATE_EXCLUSION[r.state]) for r in fleet.replicas if not r.routable
    ]


def no_replica(policy: str, fleet: FleetView, session: str | None = None) -> Decision:
    """The decision when nothing is routable: every replica listed with its exclusion."""
    return Decision(
        policy=policy,
        replica=None,
        reason=Reason.NO_REPLICA,
        candidates=tuple(excluded_by_state(fleet)),
        session=session,
    )


def least_loaded(replicas: tuple[ReplicaView, ...] | list[ReplicaView]) -> ReplicaView:
    """The replica with the smallest load relative to its weight (first in order on ties)."""
    return min(replicas, key=lambda r: r.load / r.weight if r.weight > 0 else float("inf"))


def walk_ranking(ranked: Sequence[tuple[ReplicaView, float]], bound: int) -> tuple[int, list[Candidate]]:
    """Index of the first replica whose load + 1 is within ``bound`` (-1 if none), and candidates.

    Every replica over the bound is listed as excluded with ``OVER_LOAD_BOUND``.
    """
    chosen = -1
    candidates: list[Candidate] = []
    for i, (replica, score) in enumerate(ranked):
        if replica.load + 1 > bound:
            candidates.append(Candidate(replica.name, score, replica.load, Exclusion.OVER_LOAD_BOUND))
        else:
            candidates.append(Candidate(replica.name, score, replica.load))
            if chosen < 0:
                chosen = i
    return chosen, candidates


def bounded_hrw(
    policy: str,
    key: int | str,
    fingerprint: Fingerprint,
    fleet: FleetView,
    routable: tuple[ReplicaView, ...],
    eps: float,
    prefix_key: int | None = None,
) -> Decision:
    """The first replica of ``key``'s HRW ranking under ``ceil((1 + eps) * mean load)``.

    Least loaded as a fallback, reachable only for a negative ``eps``.
    """
    kb = key_bytes(key)
    ranked = sorted(
        ((r, hrw_score_bytes(kb, r.name, r.weight)) for r in routable), key=lambda p: p[1], reverse=True
    )
    bound = load_bound(sum(r.load for r in routable), len(routable), eps)
    chosen, candidates = walk_ranking(ranked, bound)
    if chosen < 0:
        replica, reason = least_loaded(routable).name, Reason.FALLBACK
    else:
        replica = ranked[chosen][0].name
        first_choice = Reason.PREFIX_OWNER if prefix_key is not None else Reason.HRW_CHOICE
        reason = first_choice if chosen == 0 else Reason.OVERFLOW
    candidates.extend(excluded_by_state(fleet))
    return Decision(
        policy=policy,
        replica=replica,
        reason=reason,
        candidates=tuple(candidates),
        session=fingerprint.session,
        prefix_key=prefix_key,
    )


class BasePolicy:
    """``route`` and ``explain`` as one computation that books or not; no-op learning by default.

    With nothing routable both answer :func:`no_replica` and book nothing; otherwise the policy's
    ``_decide`` chooses among the routable replicas."""

    name = "base"

    def route(self, fingerprint: Fingerprint, fleet: FleetView) -> Decision:
        return self._route(fingerprint, fleet, True)

    def explain(self, fingerprint: Fingerprint, fleet: FleetView) -> Decision:
        return self._route(fingerprint, fleet, False)

    def _route(self, fingerprint: Fingerprint, fleet: FleetView, book: bool) -> Decision:
        routable = fleet.routable
        if not routable:
            return no_replica(self.name, fleet, fingerprint.session)
        return self._decide(fingerprint, fleet, routable, book)

    def observe(self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome) -> None:
        """Nothing to learn by default."""

    def session_homes(self) -> dict[str, int]:
        return {}

    def forget_replica(self, name: str) -> None:
        """No per-replica memory by default."""

    def _decide(
        self, fingerprint: Fingerprint, fleet: FleetView, routable: tuple[ReplicaView, ...], book: bool
    ) -> Decision:
        """Choose among ``routable`` (never empty); book the choice when ``book``."""
        raise NotImplementedError
