"""What the console remembers between polls: per-replica KV/hit-rate trails and the fleet series.

Live polls append; a Prometheus backfill (see :mod:`pcache_console.prometheus`) fills the same
structures with the last window before the first poll, so the charts start full.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pcache_console.source import Frame

__all__ = ["Backfill", "FleetPoint", "History"]


@dataclass(frozen=True)
class FleetPoint:
    """The fleet at one instant: what the drift chart plots."""

    t: float
    hit_rate: float | None
    drift_ratio: float | None


@dataclass
class Backfill:
    """History loaded from Prometheus: fleet points and per-replica trails, oldest first."""

    fleet: list[FleetPoint] = field(default_factory=list)
    kv_usage: dict[str, list[float]] = field(default_factory=dict)
    hit_rate: dict[str, list[float]] = field(default_factory=dict)


class History:
    """Bounded trails per replica and a time-keyed fleet series covering ``window_s``."""

    def __init__(self, trail: int = 60, window_s: float = 900.0) -> None:
        self.trail = trail
        self.window_s = window_s
        self.kv_usage: dict[str, deque[float | None]] = {}
        self.hit_rate: dict[str, deque[float | None]] = {}
        self._fleet: dict[float, FleetPoint] = {}
        self.moves_by_cause: dict[str, int] = {}

    def _trail(self, trails: dict[str, deque[float | None]], name: str) -> deque[float | None]:
        if name not in trails:
            trails[name] = deque(maxlen=self.trail)
        return trails[name]

    def record(self, frame: Frame) -> None:
        """Append one poll: every replica's trails, the ALL row, and the fleet series."""
        status = frame.status
        for replica in [*status.replicas, status.all]:
            self._trail(self.kv_usage, replica.name).append(replica.kv_usage)
            self._trail(self.hit_rate, replica.name).append(replica.hit_rate)
        if frame.drift is not None and frame.drift.points:
            self._add(FleetPoint(p.t, p.hit_rate, p.drift_ratio) for p in frame.drift.points)
            self.moves_by_cause = dict(frame.drift.moves_by_cause)
        else:
            t = status.router.generated_at or frame.fetched_at
            self._add([FleetPoint(t, status.router.hit_rate, status.router.drift_ratio)])

    def backfill(self, backfill: Backfill) -> None:
        """Put Prometheus history in front of what the live polls recorded."""
        for trails, loaded in ((self.kv_usage, backfill.kv_usage), (self.hit_rate, backfill.hit_rate)):
            for name, values in loaded.items():
                live = list(self._trail(trails, name))
                trail = self._trail(trails, name)
                trail.clear()
                trail.extend([*values, *live][-self.trail :])
        self._add(backfill.fleet, keep_existing=True)

    def _add(self, points: Iterable[FleetPoint], keep_existing: bool = False) -> None:
        for point in points:
            if keep_existing and point.t in self._fleet:
                continue
            self._fleet[point.t] = point
        if self._fleet:
            newest = max(self._fleet)
            for t in [t for t in self._fleet if t < newest - self.window_s]:
                del self._fleet[t]

    def fleet(self) -> list[FleetPoint]:
        """The fleet series, oldest first."""
        return [self._fleet[t] for t in sorted(self._fleet)]
