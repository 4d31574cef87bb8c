"""The one interface every routing policy implements, and what it returns.

``route(fingerprint, fleet) -> Decision`` is pure with respect to the outside world: synchronous, no
I/O, microseconds. It may update the policy's own memory (session homes, round-robin cursor,
approximate cache index); ``explain`` is the same computation without that booking.
``observe`` reports the outcome of a routed request so approximate indexes learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView

__all__ = [
    "Candidate",
    "Decision",
    "DriftCause",
    "DriftEvent",
    "Exclusion",
    "Outcome",
    "Policy",
    "Reason",
    "SharesHomes",
]


class Reason(StrEnum):
    """Why the chosen replica was chosen."""

    PINNED = "pinned"  # the request matched a pinned Tier-1 prefix
    SESSION_HOME = "session_home"  # the session went back to its home replica
    PREFIX_OWNER = "prefix_owner"  # first choice among the owners of the matched prefix
    HRW_CHOICE = "hrw_choice"  # no prefix matched: first choice of the session's (or prompt's) HRW ranking
    CACHE_MATCH = "cache_match"  # the replica with the longest predicted cached prefix
    OVERFLOW = "overflow"  # a better-ranked replica was over the load bound
    ROUND_ROBIN = "round_robin"
    LEAST_LOAD = "least_load"
    FALLBACK = "fallback"  # no preferred candidate was usable; any routable replica
    NO_REPLICA = "no_replica"  # nothing routable: the caller answers 503


class Exclusion(StrEnum):
    """Why a replica was not a usable candidate."""

    UNHEALTHY = "unhealthy"
    JOINING = "joining"  # added at run time, not yet checked and prewarmed
    DRAINING = "draining"
    DRAINED = "drained"
    REMOVED = "removed"
    OVER_LOAD_BOUND = "over_load_bound"
    NOT_PINNED = "not_pinned"  # outside a pinned prefix's replica set
    NOT_OWNER = "not_owner"  # outside a Tier-1 prefix's top-k owners
    OTHER_GROUP = "other_group"  # outside the Tier-1 prefix's group


class DriftCause(StrEnum):
    """Why a session left its home replica."""

    OVERLOAD = "overload"
    DRAIN = "drain"
    FAILURE = "failure"
    MEMBERSHIP = "membership"  # the home was removed from the fleet
    PIN = "pin"  # a pin change excluded the home
    TIER1 = "tier1"  # the home is outside its (unpinned) Tier-1 prefix's owners, e.g. after a spill


@dataclass(frozen=True, slots=True)
class Candidate:
    """One replica considered for a request, in preference order. ``excluded`` is None if usable."""

    replica: str
    score: float
    load: int
    excluded: Exclusion | None = None
    # The predicted cache match, where the policy has one: its source (precise | approximate), the
    # tokens the engine should report cached, and their split by storage medium (precise only).
    cache_source: str | None = None
    cached_tokens: int | None = None
    tokens_by_medium: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class DriftEvent:
    session: str
    old_home: str
    new_home: str
    cause: DriftCause


@dataclass(frozen=True, slots=True)
class Decision:
    """The routing decision and its full explanation.

    ``candidates`` lists every replica in preference order with its score and exclusion reason;
    :meth:`fallbacks` gives the usable ones after the chosen replica, in the order a retry should
    try them.
    """

    policy: str
    replica: str | None
    reason: Reason
    candidates: tuple[Candidate, ...]
    session: str | None = None
    prefix_key: int | None = None
    tier1: str | None = None
    predicted_cached_blocks: int = 0
    drift: DriftEvent | None = None
    # Cached tokens predicted for the chosen replica in the engine's accounting (None: derive from
    # predicted_cached_blocks).
    predicted_cached_tokens: int | None = None
    new_home: bool = False  # the session got a (new) home with this decision

    def fallbacks(self) -> tuple[str, ...]:
        """Usable candidates after the chosen one, best first."""
        return tuple(c.replica for c in self.candidates if c.excluded is None and c.replica != self.replica)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a routed request, reported back through ``observe``."""

    replica: str
    ok: bool
    cached_tokens: int | None = None  # engine-reported (usage.prompt_tokens_details.cached_tokens)
    prompt_tokens: int | None = None
    ttft_s: float | None = None


class Policy(Protocol):
    """A routing policy. Implementations live one per module in :mod:`pcache.policy`."""

    name: str

    def route(self, fingerprint: Fingerprint, fleet: FleetView) -> Decision:
        """Choose a replica and book the choice (session homes, cursors, cache predictions)."""
        ...

    def explain(self, fingerprint: Fingerprint, fleet: FleetView) -> Decision:
        """The decision ``route`` would make now, without booking it."""
        ...

    def observe(self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome) -> None:
        """Learn from the outcome of a routed request."""
        ...

    def session_homes(self) -> dict[str, int]:
        """Number of sessions homed on each replica (empty for policies without homes)."""
        ...

    def forget_replica(self, name: str) -> None:
        """Drop per-replica memory for a replica removed from the fleet."""
        ...


@runtime_checkable
class SharesHomes(Protocol):
    """A policy with session homes that can take a home chosen by another router (shared state)."""

    def adopt_home(self, session: str, replica: str) -> None: ...
