"""Histogram quantiles (PromQL semantics), bucket merging and counter rates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcache.engines.histogram import merge_buckets, quantile
from pcache.engines.rates import CounterRate

INF = float("inf")


def test_quantile_interpolates_linearly_within_the_bucket() -> None:
    buckets = ((0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (INF, 40.0))
    assert quantile(buckets, 0.5) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert quantile(buckets, 0.25) == pytest.approx(0.1)
    assert quantile(buckets, 0.1) == pytest.approx(0.04)  # first bucket starts at 0


def test_quantile_in_the_inf_bucket_returns_the_highest_finite_bound() -> None:
    buckets = ((0.1, 1.0), (0.5, 2.0), (INF, 10.0))
    assert quantile(buckets, 0.99) == 0.5


def test_quantile_matches_prometheus_on_the_real_vllm_ttft_histogram() -> None:
    # vllm-0.32-cpu/metrics_after.txt: 0 <= 5ms, 14 <= 10ms, 18 <= 20ms, 20 <= 40ms
    buckets = ((0.001, 0.0), (0.005, 0.0), (0.01, 14.0), (0.02, 18.0), (0.04, 20.0), (INF, 20.0))
    # histogram_quantile(0.5, ...) = 0.005 + (0.01 - 0.005) * (10 - 0) / 14
    assert quantile(buckets, 0.5) == pytest.approx(0.005 + 0.005 * 10 / 14)
    assert quantile(buckets, 0.9) == pytest.approx(0.02)
    assert quantile(buckets, 0.95) == pytest.approx(0.02 + 0.02 * 1 / 2)


def test_quantile_of_empty_histogram_is_none_and_bounds_follow_promql() -> None:
    assert quantile((), 0.5) is None
    assert quantile(((0.1, 0.0), (INF, 0.0)), 0.5) is None
    assert quantile(((0.1, 1.0), (INF, 1.0)), -0.1) == -INF
    assert quantile(((0.1, 1.0), (INF, 1.0)), 1.5) == INF


def test_quantile_reads_partial_capture_without_inf_bucket() -> None:
    assert quantile(((1.0, 2.0), (2.0, 4.0)), 0.75) == pytest.approx(1.5)


def test_merge_sums_identical_edges() -> None:
    a = ((0.1, 1.0), (1.0, 3.0), (INF, 4.0))
    b = ((0.1, 2.0), (1.0, 2.0), (INF, 5.0))
    assert merge_buckets([a, b]) == ((0.1, 3.0), (1.0, 5.0), (INF, 9.0))


def test_merge_takes_union_of_edges_carrying_cumulative_counts() -> None:
    a = ((0.1, 1.0), (1.0, 3.0), (INF, 4.0))
    b = ((0.5, 2.0), (INF, 2.0))
    assert merge_buckets([a, b]) == ((0.1, 1.0), (0.5, 3.0), (1.0, 5.0), (INF, 6.0))


def test_merge_skips_replicas_without_buckets() -> None:
    a = ((0.1, 1.0), (INF, 1.0))
    assert merge_buckets([None, a, ()]) == a
    assert merge_buckets([]) == ()


histograms = st.lists(
    st.tuples(st.sampled_from([0.01, 0.05, 0.1, 0.5, 1.0, 5.0]), st.integers(0, 50)), min_size=1, max_size=6
).map(lambda pairs: _cumulative(dict(pairs)))


def _cumulative(raw: dict[float, int]) -> tuple[tuple[float, float], ...]:
    total = 0.0
    out = []
    for edge in sorted(raw):
        total += raw[edge]
        out.append((edge, total))
    out.append((INF, total))
    return tuple(out)


@given(st.lists(histograms, min_size=1, max_size=4))
def test_merged_histogram_is_cumulative_and_keeps_every_observation(
    sets: list[tuple[tuple[float, float], ...]],
) -> None:
    merged = merge_buckets(sets)
    counts = [count for _, count in merged]
    assert counts == sorted(counts)
    assert merged[-1] == (INF, sum(h[-1][1] for h in sets))


@given(histograms, st.floats(0, 1))
def test_quantile_is_monotonic_in_q(buckets: tuple[tuple[float, float], ...], q: float) -> None:
    low, high = quantile(buckets, q * 0.5), quantile(buckets, q)
    if low is not None and high is not None:
        assert low <= high or math.isclose(low, high)


def test_counter_rate_reports_deltas_and_treats_a_drop_as_a_reset() -> None:
    rate = CounterRate()
    assert rate.update(100.0, at=0.0) is None
    assert rate.update(150.0, at=10.0) == 50.0
    assert rate.rate == 5.0
    assert rate.update(30.0, at=20.0) == 30.0  # restarted: counted from zero again
    assert rate.update(45.0, at=25.0) == 15.0
    assert rate.total == 95.0


def test_counter_rate_ignores_missing_scrapes() -> None:
    rate = CounterRate()
    rate.update(10.0, at=0.0)
    assert rate.update(None, at=5.0) is None
    assert rate.update(20.0, at=10.0) == 10.0
    assert rate.rate == 1.0
