"""Passive outlier detection and panic routing, as Envoy does them.

Active health checks only see ``/health``; a replica can answer it and still fail real requests
(500 to everything, streams that die midway, requests that time out). The review saw a replica
returning 500 to everything flap healthy/unhealthy six times, and 29 client-visible mid-stream
errors in 18 s. :class:`OutlierDetector` counts each replica's *consecutive* failed proxied
requests (an error status, a refused connection, a timeout, a body or stream that broke off) and,
at ``consecutive_failures``, ejects it for ``base_ejection_s`` times the number of times it has been
ejected (capped at ``max_ejection_s``): passing health checks do not bring it back before that.
At most ``max_ejected_fraction`` of the replicas are ejected at once, so detection cannot empty
the fleet by itself. A good answer resets the count; a replica that stays good for its last
ejection's length again has its ejection count decay by one.

:func:`panic_view` is Envoy's healthy-panic threshold at zero: when no replica is routable because
all are marked unhealthy (checks timing out on an overloaded machine, say), routing over all of
them beats failing every request; the proxy then answers 503 only when none of them answers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pcache.fleet_view import FleetView, ReplicaState

__all__ = ["Ejection", "OutlierDetector", "panic_view"]


@dataclass(slots=True)
class _Record:
    consecutive: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    good_since: float = 0.0


@dataclass(frozen=True, slots=True)
class Ejection:
    """A replica held out until ``until`` (monotonic clock) after ``failures`` failures in a row."""

    replica: str
    until: float
    seconds: float
    failures: int
    reason: str


class OutlierDetector:
    """Consecutive-failure ejection with an exponential back-off per replica."""

    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        base_ejection_s: float = 30.0,
        max_ejection_s: float = 300.0,
        max_ejected_fraction: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consecutive_failures = consecutive_failures
        self.base_ejection_s = base_ejection_s
        self.max_ejection_s = max_ejection_s
        self.max_ejected_fraction = max_ejected_fraction
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def ejected(self, replica: str) -> bool:
        record = self._records.get(replica)
        return record is not None and self._clock() < record.ejected_until

    def ejected_until(self, replica: str) -> float | None:
        """When the replica's ejection ends (monotonic clock), or None when it is not ejected."""
        record = self._records.get(replica)
        return record.ejected_until if record is not None and self.ejected(replica) else None

    def success(self, replica: str) -> None:
        """A good proxied answer: the failure streak ends (and old ejections start to be forgiven)."""
        record = self._records.get(replica)
        if record is None:
            return
        now = self._clock()
        if record.consecutive:
            record.consecutive = 0
            record.good_since = now
        elif record.ejections and now - record.good_since >= self._length(record.ejections):
            record.ejections -= 1
            record.good_since = now

    def failure(self, replica: str, reason: str, fleet_size: int) -> Ejection | None:
        """A failed proxied request; returns the ejection it caused, if any."""
        record = self._records.setdefault(replica, _Record())
        now = self._clock()
        if now < record.ejected_until:
            return None  # already out (requests that were in flight when it was ejected)
        record.consecutive += 1
        if record.consecutive < self.consecutive_failures:
            return None
        if self._ejected_count(now) + 1 > max(1, math.floor(fleet_size * self.max_ejected_fraction)):
            return None  # holding out more would leave too little of the fleet
        record.ejections += 1
        seconds = self._length(record.ejections)
        record.ejected_until = now + seconds
        failures, record.consecutive = record.consecutive, 0
        record.good_since = record.ejected_until
        return Ejection(
            replica=replica, until=record.ejected_until, seconds=seconds, failures=failures, reason=reason
        )

    def forget(self, replica: str) -> None:
        self._records.pop(replica, None)

    def _length(self, ejections: int) -> float:
        return min(self.base_ejection_s * ejections, self.max_ejection_s)

    def _ejected_count(self, now: float) -> int:
        return sum(1 for record in self._records.values() if now < record.ejected_until)


def panic_view(view: FleetView) -> FleetView | None:
    """``view`` with its unhealthy replicas shown healthy, when none is healthy but some are only
    unhealthy (not draining, drained or joining); None when there is nothing to panic over."""
    states = [replica.state for replica in view.replicas]
    if ReplicaState.HEALTHY in states or ReplicaState.UNHEALTHY not in states:
        return None
    replicas = tuple(
        dataclasses.replace(replica, state=ReplicaState.HEALTHY)
        if replica.state is ReplicaState.UNHEALTHY
        else replica
        for replica in view.replicas
    )
    return dataclasses.replace(view, replicas=replicas)
