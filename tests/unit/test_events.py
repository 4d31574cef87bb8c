"""The router's event log: state changes seen from the fleet, results and bursts found when read."""

from __future__ import annotations

from pcache.api import DriftPoint, DriftSeries, PrewarmJob, PrewarmPair
from pcache.fleet import Fleet
from pcache.router.events import EventLog


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _fleet() -> Fleet:
    fleet = Fleet(failure_threshold=1, recovery_threshold=1)
    fleet.add("r1", "http://127.0.0.1:1")
    fleet.add("r2", "http://127.0.0.1:2")
    return fleet


def test_state_changes_membership_and_recovery_are_recorded_in_order() -> None:
    fleet, log = _fleet(), EventLog(clock=Clock())
    log.watch_fleet(fleet)
    assert log.since().events == []  # the states at watch time are the baseline
    fleet.report_failure("r2", "connect refused")
    fleet.report_success("r2")
    fleet.set_drain("r1", "draining")  # nothing in flight: straight to drained
    fleet.add("r3", "http://127.0.0.1:3")
    fleet.remove("r3")
    messages = [(e.kind, e.message, e.ok) for e in log.since().events]
    assert messages == [
        ("replica_state", "r2: healthy -> unhealthy (connect refused)", False),
        ("replica_state", "r2: unhealthy -> healthy", True),
        ("replica_state", "r1: healthy -> drained", None),
        ("replica_added", "r3 added (http://127.0.0.1:3), healthy", None),
        ("replica_removed", "r3 removed from the fleet", None),
    ]


def test_since_pages_by_id_and_the_log_is_bounded() -> None:
    log = EventLog(capacity=3, clock=Clock())
    for n in range(5):
        log.record("pin", f"p{n} pinned", prefix=f"p{n}")
    page = log.since()
    assert [e.prefix for e in page.events] == ["p2", "p3", "p4"] and page.last_id == 5
    assert [e.prefix for e in log.since(after=4).events] == ["p4"]
    assert [e.prefix for e in log.since(limit=1).events] == ["p4"]


def _job(job_id: str, finished: float | None, failed: int = 0) -> PrewarmJob:
    results = [PrewarmPair(prefix="sys", replica="r1", ok=True)]
    results += [PrewarmPair(prefix="sys", replica="r2", ok=False, error="HTTP 400")] * failed
    return PrewarmJob(
        id=job_id,
        state="running" if finished is None else ("failed" if failed else "done"),
        total=1 + failed,
        done=1 + failed if finished else 0,
        failed=failed,
        created_at=1.0,
        finished_at=finished,
        results=results if finished else [],
    )


def test_finished_prewarms_are_reported_once_with_their_result() -> None:
    log = EventLog(clock=Clock())
    empty = DriftSeries(window_s=10, points=[], moves_by_cause={})
    log.sweep(jobs=[_job("a", None)], drift=empty)
    assert log.since().events == []
    log.sweep(jobs=[_job("a", 50.0), _job("b", 60.0, failed=1)], drift=empty)
    log.sweep(jobs=[_job("a", 50.0), _job("b", 60.0, failed=1)], drift=empty)
    events = log.since().events
    assert [(e.job, e.ok, e.t) for e in events] == [("a", True, 50.0), ("b", False, 60.0)]
    assert events[0].message == "prewarm a done: 1/1 pairs warmed"
    assert events[1].message == "prewarm b failed: 1/2 pairs warmed; failed: sys on r2: HTTP 400"


def test_a_window_with_many_home_moves_is_a_burst_reported_once() -> None:
    clock = Clock()
    log = EventLog(clock=clock)

    def point(t: float, moves: int) -> DriftPoint:
        return DriftPoint(
            t=t, requests=40, session_requests=40, moves=moves, drift_ratio=moves / 40, hit_rate=None
        )

    series = DriftSeries(
        window_s=10,
        points=[point(clock.now - 30, 1), point(clock.now - 20, 12), point(clock.now, 30)],
        moves_by_cause={},
    )
    log.sweep(jobs=[], drift=series)
    log.sweep(jobs=[], drift=series)
    events = log.since().events
    assert [(e.kind, e.t) for e in events] == [("home_moves", clock.now - 20)]  # the open window waits
    assert events[0].message == "12 session homes moved in 10s (30% of 40 session requests)"
