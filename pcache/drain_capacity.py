"""Can the rest of a replica's group take its work? The capacity check shown before a drain.

Draining moves a replica's sessions and Tier-1 prefixes to its peers (the replicas of the same
group, or the whole fleet when it has no group). If those peers already sit near full KV cache or
with requests queued, the drain turns one busy replica into a busy group. This reads the peers' last
engine numbers from a status snapshot; it is pure and cheap, so a dialog can recompute it each poll.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcache.api import ReplicaStatus, StatusSnapshot

__all__ = ["KV_FULL", "WAITING_PER_PEER", "DrainCapacity", "drain_capacity"]

KV_FULL = 0.85  # peers' mean KV usage from which a drain is called risky (the console's red)
WAITING_PER_PEER = 4  # queued requests per peer from which a drain is called risky


@dataclass(frozen=True, slots=True)
class DrainCapacity:
    """The peers that would absorb a drained replica's work, and how loaded they are now."""

    replica: str
    group: str | None
    peers: tuple[str, ...]  # routable replicas of the group, the drained one excluded
    kv_mean: float | None  # over the peers that report KV usage
    kv_max: float | None
    waiting: int  # requests queued on the peers' engines
    running: int

    @property
    def warnings(self) -> list[str]:
        """Why the drain is risky, one line each; empty when the peers have room."""
        where = f"group {self.group}" if self.group else "the fleet"
        if not self.peers:
            return [f"no other routable replica in {where}: its traffic has nowhere to go"]
        found = []
        if self.kv_mean is not None and self.kv_mean >= KV_FULL:
            found.append(f"the rest of {where} is at {self.kv_mean:.0%} KV usage (max {self.kv_max:.0%})")
        if self.waiting >= WAITING_PER_PEER * len(self.peers):
            found.append(f"the rest of {where} already queues {self.waiting} requests")
        return found

    def summary(self) -> str:
        where = f"group {self.group}" if self.group else "the fleet"
        kv = "unknown" if self.kv_mean is None else f"{self.kv_mean:.0%} mean, {self.kv_max:.0%} max"
        return (
            f"{len(self.peers)} other routable replica(s) in {where} take its work: "
            f"KV {kv}, {self.running} running, {self.waiting} waiting"
        )


def _routable(row: ReplicaStatus) -> bool:
    return row.state == "healthy" and not row.stale


def drain_capacity(snapshot: StatusSnapshot, replica: str) -> DrainCapacity:
    """The capacity check for draining ``replica``, from the fleet as ``snapshot`` saw it."""
    target = next((row for row in snapshot.replicas if row.name == replica), None)
    group = target.group if target is not None else None
    peers = [
        row
        for row in snapshot.replicas
        if row.name != replica and _routable(row) and (group is None or row.group == group)
    ]
    kv = [row.kv_usage for row in peers if row.kv_usage is not None]
    return DrainCapacity(
        replica=replica,
        group=group,
        peers=tuple(sorted(row.name for row in peers)),
        kv_mean=sum(kv) / len(kv) if kv else None,
        kv_max=max(kv) if kv else None,
        waiting=sum(row.waiting or 0 for row in peers),
        running=sum(row.running or 0 for row in peers),
    )
