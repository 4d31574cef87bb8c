"""The recent-error window: kinds that add up, rates per replica and fleet, and recovery in time."""

from __future__ import annotations

import pytest

from pcache.router.error_window import ErrorWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_no_work_means_no_rate(clock: Clock) -> None:
    window = ErrorWindow(clock=clock)
    assert window.error_rate() is None
    assert window.error_rate("r1") is None
    assert window.counts() == {"router_5xx": 0, "upstream": 0, "mid_stream": 0, "retries": 0}


def test_a_retried_failure_shows_on_the_replica_but_not_as_a_client_error(clock: Clock) -> None:
    window = ErrorWindow(clock=clock)
    window.upstream_error("r1")
    window.retry("r1")
    window.response(200, "r2")
    assert window.counts("r1") == {"router_5xx": 0, "upstream": 1, "mid_stream": 0, "retries": 1}
    assert window.error_rate("r1") == 1.0
    assert window.error_rate("r2") == 0.0
    assert window.error_rate() == 0.0  # the client got its answer


def test_router_5xx_and_broken_streams_are_client_visible_failures(clock: Clock) -> None:
    window = ErrorWindow(clock=clock)
    window.response(503)  # no replica available: fleet only
    window.response(502, "r1", mid_stream=True)
    window.response(200, "r1")
    window.response(200, "r2")
    assert window.counts() == {"router_5xx": 1, "upstream": 0, "mid_stream": 1, "retries": 0}
    assert window.counts("r1") == {"router_5xx": 0, "upstream": 0, "mid_stream": 1, "retries": 0}
    assert window.error_rate() == pytest.approx(2 / 4)
    assert window.error_rate("r1") == pytest.approx(1 / 2)


def test_a_burst_is_gone_within_two_windows_after_it_ends(clock: Clock) -> None:
    window = ErrorWindow(slot_s=10, slots=6, clock=clock)
    for _ in range(20):
        window.response(500, "r1")
    assert window.error_rate("r1") == 1.0
    burst_end = clock.now
    while clock.now < burst_end + 2 * window.window_s:
        clock.now += 5
        window.response(200, "r1")
        if clock.now - burst_end > window.window_s + window.slot_s:
            assert window.counts("r1")["router_5xx"] == 0
            assert window.error_rate("r1") == 0.0
    assert window.error_rate() == 0.0


def test_old_slots_are_dropped_so_memory_stays_bounded(clock: Clock) -> None:
    window = ErrorWindow(slot_s=1, slots=3, clock=clock)
    for _ in range(100):
        clock.now += 1
        window.response(500, "r1")
    assert len(window._counts) <= 3


def test_invalid_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="slot_s"):
        ErrorWindow(slot_s=0)
