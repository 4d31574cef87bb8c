"""The live fleet: views, health thresholds, the drain state machine and Tier-1 owners."""

from __future__ import annotations

import pytest

from pcache.engines.base import ReplicaStats
from pcache.fleet import Fleet, UnknownReplica
from pcache.fleet_view import ReplicaState
from pcache.policy.base import Exclusion
from pcache.policy.common import excluded_by_state


def _fleet(*names: str, **kwargs: object) -> Fleet:
    fleet = Fleet(**kwargs)  # type: ignore[arg-type]
    for name in names:
        fleet.add(name, f"http://127.0.0.1:1/{name}/")
    return fleet


def test_the_view_is_cached_until_something_changes() -> None:
    fleet = _fleet("r1", "r2")
    view = fleet.view()
    assert fleet.view() is view
    fleet.begin("r1")
    changed = fleet.view()
    assert changed is not view
    assert changed.by_name("r1") is not None and changed.by_name("r1").load == 1  # type: ignore[union-attr]


def test_load_counts_the_routers_requests_once_when_the_engine_also_queues_them() -> None:
    fleet = _fleet("r1")
    for _ in range(5):
        fleet.begin("r1")
    # The engine runs 4 of the router's 5 and queues the fifth: 5 requests, not 5 + 1.
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", running=4, waiting=1, kv_usage=0.5), 0.0, 0.0)
    replica = fleet.view().by_name("r1")
    assert replica is not None and replica.load == 5 and replica.kv_usage == 0.5


def test_load_adds_the_engines_requests_from_other_clients() -> None:
    fleet = _fleet("r1")
    fleet.begin("r1")
    fleet.begin("r1")
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", running=3, waiting=2), 0.0, 0.0)
    assert fleet.get("r1").load == 5  # 2 through this router + 3 that came another way
    fleet.end("r1")  # a request of ours finished after the scrape: the others' 3 still count
    assert fleet.get("r1").load == 4


def test_a_dead_replicas_gauges_are_forgotten_not_kept_as_live_values() -> None:
    fleet = _fleet("r1", failure_threshold=1)
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", running=3, waiting=2, kv_usage=0.7), 0.0, 0.0)
    fleet.report_failure("r1", "connection refused")
    stats = fleet.get("r1").stats
    assert stats is not None and (stats.kv_usage, stats.running, stats.waiting) == (None, None, None)
    assert fleet.get("r1").load == 0 and not fleet.get("r1").gauges_live


def test_a_failed_scrape_makes_the_gauges_unknown() -> None:
    fleet = _fleet("r1")
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", running=1, waiting=0, kv_usage=0.4), 0.0, 0.0)
    fleet.scrape_failed("r1", "scrape failed: timeout")
    replica = fleet.view().by_name("r1")
    assert replica is not None and replica.kv_usage is None and replica.load == 0


def test_fleet_prefix_totals_use_the_replicas_window() -> None:
    clock = [1000.0]
    fleet = _fleet("r1", "r2", clock=lambda: clock[0])
    fleet.apply_stats("r1", ReplicaStats(engine="vllm"), 100.0, 90.0)
    clock[0] += 30
    fleet.apply_stats("r2", ReplicaStats(engine="vllm"), 100.0, 10.0)
    rates = [fleet.get(n).hit_rate(clock[0]) for n in ("r1", "r2")]
    queries, hits = fleet.prefix_totals()
    assert rates == [0.9, 0.1] and (queries, hits) == (200.0, 100.0)
    clock[0] += 45  # r1's sample left the window: both the replica and the fleet forget it
    assert fleet.get("r1").hit_rate(clock[0]) is None and fleet.prefix_totals() == (100.0, 10.0)


def test_pending_prefill_tokens_are_visible_to_policies_until_prefilled() -> None:
    fleet = _fleet("r1", "r2")
    fleet.begin("r1", 3000)
    fleet.begin("r1", 500)
    view = fleet.view().by_name("r1")
    assert view is not None and view.pending_tokens == 3500
    fleet.prefilled("r1", 3000)  # first byte of the first request
    view = fleet.view().by_name("r1")
    assert view is not None and view.pending_tokens == 500 and view.load == 2
    fleet.prefilled("r1", 500)
    fleet.end("r1")
    fleet.end("r1")
    view = fleet.view().by_name("r1")
    assert view is not None and view.pending_tokens == 0 and view.load == 0


def test_draining_becomes_drained_when_the_last_request_ends() -> None:
    drained: list[str] = []
    fleet = _fleet("r1", "r2", on_drained=drained.append)
    fleet.begin("r1")
    fleet.set_drain("r1", "draining")
    assert fleet.get("r1").state is ReplicaState.DRAINING
    assert fleet.routable_names() == ["r2"]
    fleet.end("r1")
    assert fleet.get("r1").state is ReplicaState.DRAINED
    assert drained == ["r1"]


def test_draining_an_idle_replica_is_drained_at_once() -> None:
    fleet = _fleet("r1", "r2")
    fleet.set_drain("r1", "draining")
    assert fleet.get("r1").state is ReplicaState.DRAINED
    fleet.set_drain("r1", None)
    assert fleet.get("r1").state is ReplicaState.HEALTHY


def test_failures_and_recoveries_follow_the_thresholds() -> None:
    fleet = _fleet("r1", failure_threshold=2, recovery_threshold=2)
    assert fleet.report_failure("r1", "boom") is False
    assert fleet.get("r1").healthy
    assert fleet.report_failure("r1", "boom") is True
    assert fleet.get("r1").state is ReplicaState.UNHEALTHY
    assert fleet.report_success("r1") is False
    assert fleet.report_success("r1") is True
    assert fleet.get("r1").state is ReplicaState.HEALTHY


def test_a_success_resets_the_failure_streak() -> None:
    fleet = _fleet("r1", failure_threshold=2)
    fleet.report_failure("r1", "x")
    fleet.report_success("r1")
    fleet.report_failure("r1", "x")
    assert fleet.get("r1").healthy


def test_membership_changes() -> None:
    fleet = _fleet("r1")
    with pytest.raises(ValueError):
        fleet.add("r1", "http://x")
    fleet.add("r2", "http://x/", source="runtime", joining=True)
    assert fleet.get("r2").url == "http://x"
    assert fleet.routable_names() == ["r1"]
    assert fleet.get("r2").state is ReplicaState.JOINING  # not "unhealthy": nothing failed yet
    assert fleet.get("r2").last_error is None
    assert [(c.replica, c.excluded) for c in excluded_by_state(fleet.view())] == [("r2", Exclusion.JOINING)]
    for _ in range(5):
        fleet.report_success("r2")  # health checks alone do not end the joining phase
    assert fleet.routable_names() == ["r1"]
    fleet.finish_joining("r2", routable=True)
    assert fleet.get("r2").state is ReplicaState.HEALTHY
    assert fleet.routable_names() == ["r1", "r2"]
    fleet.add("r3", "http://y", source="runtime", joining=True)
    fleet.finish_joining("r3", routable=False)  # its first health check failed: recovery decides
    assert fleet.get("r3").state is ReplicaState.UNHEALTHY
    fleet.remove("r1")
    with pytest.raises(UnknownReplica):
        fleet.get("r1")
    fleet.end("r1")  # a request finishing on a removed replica is harmless


def test_the_recent_hit_rate_comes_from_scrape_deltas() -> None:
    fleet = _fleet("r1")
    fleet.apply_stats("r1", ReplicaStats(engine="vllm"), 100.0, 25.0)
    fleet.apply_stats("r1", ReplicaStats(engine="vllm"), 100.0, 75.0)
    entry = fleet.get("r1")
    assert entry.hit_rate(entry.scraped_at or 0.0) == pytest.approx(0.5)


def test_a_replica_s_last_error_is_dated_and_clears_when_it_answers_well_again() -> None:
    clock = [100.0]
    fleet = Fleet(failure_threshold=3, clock=lambda: clock[0])
    fleet.add("r1", "http://127.0.0.1:1")
    fleet.report_failure("r1", "health check failed: TimeoutError")
    entry = fleet.get("r1")
    assert (entry.last_error, entry.last_error_at) == ("health check failed: TimeoutError", 100.0)
    assert entry.healthy  # one failure is below the threshold
    clock[0] = 130.0
    fleet.scrape_failed("r1", "scrape: connection reset")
    assert (entry.last_error, entry.last_error_at) == ("scrape: connection reset", 130.0)
    fleet.report_success("r1")
    assert (entry.last_error, entry.last_error_at) == (None, None)
