"""An immutable snapshot of the fleet, as a routing policy reads it.

The daemon's :mod:`pcache.fleet` (and the replayer's simulated fleet) build a new
:class:`FleetView` whenever membership, state, load or Tier-1 registrations change; policies only
read it. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["FleetView", "ReplicaState", "ReplicaView", "Tier1Prefix"]


class ReplicaState(StrEnum):
    """A replica's lifecycle state; only ``healthy`` replicas take new work."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # failed health checks; retried
    JOINING = "joining"  # added at run time; health-checked and prewarmed before it takes work
    DRAINING = "draining"  # no new sessions; in-flight requests finish
    DRAINED = "drained"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as routing sees it. ``load`` = in flight through the router + engine waiting."""

    name: str
    state: ReplicaState = ReplicaState.HEALTHY
    load: int = 0
    weight: float = 1.0
    group: str | None = None
    kv_usage: float | None = None
    cache_capacity_tokens: int | None = None
    # Estimated prompt tokens still to prefill before a new request could start (0 if unknown).
    pending_tokens: int = 0

    @property
    def routable(self) -> bool:
        return self.state is ReplicaState.HEALTHY


@dataclass(frozen=True, slots=True)
class Tier1Prefix:
    """A broadly shared prompt prefix (system prompt, tool definitions).

    ``pinned`` replicas, when given, are its only candidates. Otherwise it is cached on the top
    ``copies`` replicas of its HRW ranking (restricted to ``group`` when set).
    """

    name: str
    blocks: tuple[int, ...]
    copies: int = 1
    pinned: tuple[str, ...] = ()
    group: str | None = None
    source: str = "config"  # config | pin | auto | prewarm

    @property
    def key(self) -> int:
        """The HRW key of the prefix: the hash of its last block (which chains all before it)."""
        return self.blocks[-1] if self.blocks else 0


@dataclass(frozen=True, slots=True)
class FleetView:
    """Replicas in a stable order plus the Tier-1 registry."""

    replicas: tuple[ReplicaView, ...]
    tier1: Mapping[str, Tier1Prefix] = field(default_factory=dict)

    def by_name(self, name: str) -> ReplicaView | None:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        return None

    @property
    def routable(self) -> tuple[ReplicaView, ...]:
        return tuple(r for r in self.replicas if r.routable)
