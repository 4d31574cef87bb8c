"""Fleet results from two scrapes of real vLLM ``/metrics`` captures (counter deltas, merged buckets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcache.demo import FleetCounters
from pcache.engines import parse_metrics
from pcache.engines.histogram import quantile

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine-metrics" / "vllm-0.32-cpu"
BEFORE = parse_metrics((CAPTURES / "metrics_before.txt").read_text())
AFTER = parse_metrics((CAPTURES / "metrics_after.txt").read_text())


def test_hit_rate_and_requests_are_counter_deltas() -> None:
    counters = FleetCounters.between({"a": BEFORE, "b": AFTER}, {"a": AFTER, "b": AFTER})
    assert AFTER.prefix_hits is not None and AFTER.prefix_queries is not None
    assert BEFORE.prefix_hits is not None and BEFORE.prefix_queries is not None
    hits = AFTER.prefix_hits - BEFORE.prefix_hits  # replica "b" did nothing between the scrapes
    queries = AFTER.prefix_queries - BEFORE.prefix_queries
    assert counters.prefix_hits == hits and counters.prefix_queries == queries
    assert counters.hit_rate == pytest.approx(hits / queries)
    assert counters.requests["b"] == 0
    assert counters.requests["a"] == (AFTER.requests_success or 0) - (BEFORE.requests_success or 0) > 0
    assert counters.imbalance == pytest.approx(2.0)  # all of it on one of two replicas


def test_ttft_percentiles_come_from_the_buckets_observed_between_scrapes() -> None:
    counters = FleetCounters.between({"a": BEFORE}, {"a": AFTER})
    earlier = dict(BEFORE.ttft_buckets or ())
    observed = [(edge, count - earlier.get(edge, 0.0)) for edge, count in AFTER.ttft_buckets or ()]
    assert counters.ttft_p50_s == quantile(observed, 0.5)
    assert counters.ttft_p95_s == quantile(observed, 0.95)
    assert counters.ttft_p50_s is not None and counters.ttft_p50_s <= (counters.ttft_p95_s or 0)


def test_a_replica_that_restarted_counts_from_zero() -> None:
    counters = FleetCounters.between({"a": AFTER}, {"a": BEFORE})  # counters went down: a restart
    assert counters.prefix_queries == (BEFORE.prefix_queries or 0)
    assert counters.requests["a"] == int(BEFORE.requests_success or 0)
