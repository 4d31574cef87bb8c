"""Recent windows of engine counters and histograms: percentiles that forget an old incident."""

from __future__ import annotations

import math

from pcache.engines.histogram import quantile
from pcache.engines.window import CounterWindow, HistogramWindow, bucket_increase

INF = math.inf


def test_bucket_increase_is_the_difference_and_a_reset_gives_the_new_counts() -> None:
    before = ((0.1, 2.0), (1.0, 5.0), (INF, 6.0))
    after = ((0.1, 4.0), (1.0, 8.0), (INF, 9.0))
    assert bucket_increase(after, before) == ((0.1, 2.0), (1.0, 3.0), (INF, 3.0))
    restarted = ((0.1, 1.0), (1.0, 1.0), (INF, 1.0))
    assert bucket_increase(restarted, after) == restarted


def test_windowed_percentile_forgets_an_incident_the_lifetime_histogram_keeps() -> None:
    window = HistogramWindow(window_s=60.0)
    window.observe(0.0, ((0.2, 0.0), (20.0, 0.0), (INF, 0.0)))
    # An incident: 10 requests of about 15 s.
    incident = ((0.2, 0.0), (20.0, 10.0), (INF, 10.0))
    window.observe(10.0, incident)
    assert (quantile(window.buckets(10.0), 0.95) or 0) > 10.0
    # A minute later the fleet is healthy again: 30 fast requests.
    healthy = ((0.2, 30.0), (20.0, 40.0), (INF, 40.0))
    window.observe(80.0, healthy)
    recent = window.buckets(80.0)
    assert recent == ((0.2, 30.0), (20.0, 30.0), (INF, 30.0))
    assert (quantile(recent, 0.95) or 1) <= 0.2
    assert (quantile(healthy, 0.95) or 0) > 10.0  # what the lifetime buckets still say


def test_the_first_scrape_is_only_a_baseline_and_an_idle_window_has_no_percentile() -> None:
    window = HistogramWindow(window_s=60.0)
    window.observe(0.0, ((1.0, 50.0), (INF, 50.0)))
    assert window.buckets(0.0) is None
    window.observe(15.0, ((1.0, 50.0), (INF, 50.0)))  # nothing new
    assert window.buckets(15.0) is None


def test_counter_window_sums_the_increases_inside_the_window() -> None:
    window = CounterWindow(2, window_s=60.0)
    window.add(0.0, (100.0, 50.0))
    window.add(30.0, (10.0, 10.0))
    assert window.totals(30.0) == (110.0, 60.0)
    assert window.totals(70.0) == (10.0, 10.0)
