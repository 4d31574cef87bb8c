"""The status snapshot's rows and ALL row: live gauges only, one window for hit rate and latency."""

from __future__ import annotations

import math
import time

from pcache.api import StatusSnapshot
from pcache.engines.base import ReplicaStats
from pcache.fleet import Fleet
from pcache.ledger import Ledger
from pcache.router.error_window import ErrorWindow
from pcache.router.snapshot import status_snapshot

INF = math.inf


def _snapshot(fleet: Fleet) -> StatusSnapshot:
    return status_snapshot(
        fleet,
        owners={},
        ledger=Ledger(),
        errors=ErrorWindow(),
        sessions={},
        policy="tiered",
        url="http://127.0.0.1:1",
        admin_url="http://127.0.0.1:2",
        started_at=time.time(),
        stale_after_s=30.0,
    )


def _fleet(*names: str) -> Fleet:
    fleet = Fleet(failure_threshold=1)
    for name in names:
        fleet.add(name, f"http://127.0.0.1:1/{name}")
    return fleet


def test_all_row_hit_rate_lies_within_its_replicas_range() -> None:
    fleet = _fleet("r1", "r2")
    # r1 hit well long ago (outside the window) and a little now; r2 hit now.
    fleet.apply_stats("r1", ReplicaStats(engine="vllm"), 1000.0, 900.0)
    fleet.get("r1").prefix_window.add(time.time() - 3600, (1_000_000.0, 1_000_000.0))
    fleet.apply_stats("r2", ReplicaStats(engine="vllm"), 1000.0, 500.0)
    snapshot = _snapshot(fleet)
    rates = sorted(r.hit_rate or 0.0 for r in snapshot.replicas)
    assert snapshot.all.hit_rate is not None and rates[0] <= snapshot.all.hit_rate <= rates[1]
    assert snapshot.all.hit_rate == 1400.0 / 2000.0


def test_a_dead_replica_shows_no_gauges_and_adds_none_to_the_all_row() -> None:
    fleet = _fleet("r1", "r2")
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", running=2, waiting=1, kv_usage=0.5), 0.0, 0.0)
    fleet.apply_stats("r2", ReplicaStats(engine="vllm", running=7, waiting=3, kv_usage=0.9), 0.0, 0.0)
    fleet.report_failure("r2", "connection refused")
    snapshot = _snapshot(fleet)
    dead = next(r for r in snapshot.replicas if r.name == "r2")
    assert (dead.kv_usage, dead.running, dead.waiting) == (None, None, None)
    assert (snapshot.all.running, snapshot.all.waiting, snapshot.all.kv_usage) == (2, 1, 0.5)


def test_status_latency_is_the_recent_window_and_the_lifetime_value_is_labelled() -> None:
    fleet = _fleet("r1")
    slow = ((0.25, 0.0), (20.0, 10.0), (INF, 10.0))
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", ttft_buckets=slow, e2e_buckets=slow), 0.0, 0.0)
    fast = ((0.25, 40.0), (20.0, 50.0), (INF, 50.0))
    fleet.apply_stats("r1", ReplicaStats(engine="vllm", ttft_buckets=fast, e2e_buckets=fast), 0.0, 0.0)
    snapshot = _snapshot(fleet)
    row = snapshot.replicas[0]
    assert row.window_s == 60.0
    assert row.ttft_p95 is not None and row.ttft_p95 <= 0.25
    assert row.ttft_p99 is not None and row.ttft_p99 <= 0.25 and row.e2e_p95 is not None
    assert row.ttft_lifetime_p95 is not None and row.ttft_lifetime_p95 > 10.0
    assert row.ttft_buckets == [(0.25, 40.0), (20.0, 40.0)]
    assert snapshot.all.ttft_p95 == row.ttft_p95 and snapshot.all.ttft_lifetime_p95 == row.ttft_lifetime_p95
