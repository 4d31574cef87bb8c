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


def test_load_is_in_flight_plus_engine_waiting() -> None:
    fleet = _fleet("r1")
    fleet.begin("r1")
    fleet.begin("r1")
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", waiting=5, kv_usage=0.5), 0.0, 0.0)
    replica = fleet.view().by_name("r1")
    assert replica is not None and replica.load == 7 and replica.kv_usage == 0.5


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
