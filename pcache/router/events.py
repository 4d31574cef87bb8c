"""The router's event log: what happened, when, in one bounded list that the CLI and console share.

Three sources feed it:

- operator actions, recorded by the admin API as they are accepted (drain, undrain, pin, unpin,
  prewarm started);
- replica state changes (healthy -> unhealthy -> healthy, draining -> drained, added, removed),
  seen by :meth:`EventLog.watch_fleet`, which compares states whenever the fleet changes;
- results and bursts, found by :meth:`EventLog.sweep` when the log is read: prewarm jobs that
  finished (with their pair counts) and ledger windows where many session homes moved.

Only the newest ``capacity`` events are kept. Call from the router's event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from pcache.api import DriftSeries, EventKind, EventList, PrewarmJob, RouterEvent
from pcache.fleet import Fleet

__all__ = ["BURST_MOVES", "BURST_RATIO", "EventLog"]

BURST_MOVES = 5  # a ledger window with at least this many home moves...
BURST_RATIO = 0.1  # ...that are at least this share of its session requests is a home-move burst


class EventLog:
    """Bounded, ordered events with increasing ids."""

    def __init__(self, *, capacity: int = 1000, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._events: deque[RouterEvent] = deque(maxlen=capacity)
        self._clock = clock
        self._last_id = 0
        self._states: dict[str, str] = {}
        self._reported_jobs: set[str] = set()
        self._burst_after = 0.0  # window end times up to this one are already looked at

    def record(
        self,
        kind: EventKind,
        message: str,
        *,
        replica: str | None = None,
        prefix: str | None = None,
        job: str | None = None,
        ok: bool | None = None,
        t: float | None = None,
    ) -> RouterEvent:
        self._last_id += 1
        event = RouterEvent(
            id=self._last_id,
            t=self._clock() if t is None else t,
            kind=kind,
            message=message,
            replica=replica,
            prefix=prefix,
            job=job,
            ok=ok,
        )
        self._events.append(event)
        return event

    def since(self, after: int = 0, limit: int = 200) -> EventList:
        """Events with an id above ``after``, oldest first, at most the newest ``limit`` of them."""
        events = [event for event in self._events if event.id > after]
        return EventList(events=events[-limit:] if limit else [], last_id=self._last_id)

    # ---- replica states -------------------------------------------------------------------------

    def watch_fleet(self, fleet: Fleet) -> None:
        """Record every replica state change from now on (the current states are the baseline)."""
        self._states = {entry.name: entry.state.value for entry in fleet.entries()}
        fleet.subscribe(lambda: self._fleet_changed(fleet))

    def _fleet_changed(self, fleet: Fleet) -> None:
        now = {entry.name: entry for entry in fleet.entries()}
        for name in sorted(set(self._states) - set(now)):
            self.record("replica_removed", f"{name} removed from the fleet", replica=name)
        for name, entry in now.items():
            state = entry.state.value
            before = self._states.get(name)
            if before is None:
                self.record("replica_added", f"{name} added ({entry.url}), {state}", replica=name)
            elif before != state:
                why = f" ({entry.last_error})" if state == "unhealthy" and entry.last_error else ""
                self.record(
                    "replica_state",
                    f"{name}: {before} -> {state}{why}",
                    replica=name,
                    ok=state == "healthy" if state in ("healthy", "unhealthy") else None,
                )
        self._states = {name: entry.state.value for name, entry in now.items()}

    # ---- results found when read ----------------------------------------------------------------

    def sweep(self, *, jobs: Iterable[PrewarmJob], drift: DriftSeries, now: float | None = None) -> None:
        """Record prewarm jobs that finished and home-move bursts in windows that closed."""
        current = set()
        for job in sorted(jobs, key=lambda j: j.finished_at or 0.0):
            current.add(job.id)
            if job.finished_at is None or job.id in self._reported_jobs:
                continue
            self._reported_jobs.add(job.id)
            warmed = job.done - job.failed
            failures = [
                f"{p.prefix} on {p.replica}: {p.error or 'failed'}" for p in job.results if p.ok is False
            ]
            detail = (
                f"; failed: {', '.join(failures[:3])}" + (" ..." if len(failures) > 3 else "")
                if failures
                else ""
            )
            self.record(
                "prewarm",
                f"prewarm {job.id} {job.state}: {warmed}/{job.total} pairs warmed{detail}",
                job=job.id,
                ok=job.failed == 0 and job.state == "done",
                t=job.finished_at,
            )
        self._reported_jobs &= current  # jobs the router forgot cannot finish again
        closed_before = (self._clock() if now is None else now) - drift.window_s
        for point in drift.points:
            if point.t <= self._burst_after or point.t > closed_before:
                continue
            ratio = point.drift_ratio or 0.0
            if point.moves >= BURST_MOVES and ratio >= BURST_RATIO:
                self.record(
                    "home_moves",
                    f"{point.moves} session homes moved in {drift.window_s:g}s "
                    f"({ratio:.0%} of {point.session_requests} session requests)",
                    t=point.t,
                )
            self._burst_after = max(self._burst_after, point.t)
