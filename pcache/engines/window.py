"""Recent-window views of an engine's cumulative metrics: counter sums and histogram quantiles.

An engine's counters and histograms are cumulative since it started, so a percentile read from them
is a lifetime value: after an incident it shows the incident until the engine restarts. These
windows keep the per-scrape increases instead and sum those of the last ``window_s`` seconds, as
PromQL ``histogram_quantile(q, rate(x_bucket[1m]))`` and ``increase(x[1m])`` do. A counter or bucket
that went down means the engine restarted: the new value is the increase (as PromQL treats resets).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from pcache.engines.histogram import Buckets
from pcache.engines.rates import increase

__all__ = ["DEFAULT_WINDOW_S", "CounterWindow", "HistogramWindow", "bucket_increase", "finite"]

DEFAULT_WINDOW_S = 60.0  # the recent window of hit rate and latency percentiles, replicas and ALL


def bucket_increase(current: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]) -> Buckets:
    """Cumulative buckets observed between two scrapes of one histogram.

    A reset (any bucket lower than before, or the bucket edges changed) gives ``current`` itself:
    the engine restarted and everything it holds was observed since.
    """
    if [le for le, _ in current] != [le for le, _ in before] or any(
        now < then for (_, now), (_, then) in zip(current, before, strict=True)
    ):
        return tuple(current)
    return tuple((le, increase(now, then)) for (le, now), (_, then) in zip(current, before, strict=True))


class CounterWindow:
    """Increases of a few counters, kept per scrape, summed over the recent window."""

    __slots__ = ("_samples", "width", "window_s")

    def __init__(self, width: int, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.width = width
        self.window_s = window_s
        self._samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def add(self, now: float, deltas: Sequence[float]) -> None:
        """Record one scrape's increases (one per counter) at time ``now``."""
        if len(deltas) != self.width:
            raise ValueError(f"expected {self.width} deltas, got {len(deltas)}")
        self._samples.append((now, tuple(deltas)))
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def totals(self, now: float) -> tuple[float, ...]:
        """Each counter's increase over the window ending at ``now``."""
        sums = [0.0] * self.width
        for t, deltas in self._samples:
            if now - t <= self.window_s:
                for i, delta in enumerate(deltas):
                    sums[i] += delta
        return tuple(sums)


class HistogramWindow:
    """A histogram's per-scrape bucket increases, merged over the recent window.

    ``observe`` takes each scrape's cumulative buckets; the first scrape only sets the baseline
    (what the engine observed before the router watched it is lifetime, not recent).
    """

    __slots__ = ("_last", "_samples", "window_s")

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window_s = window_s
        self._last: Buckets | None = None
        self._samples: deque[tuple[float, Buckets]] = deque()

    def observe(self, now: float, buckets: Sequence[tuple[float, float]] | None) -> None:
        """Feed one scrape's cumulative buckets (``None``: the histogram is absent, nothing changes)."""
        if not buckets:
            return
        current = tuple(sorted(buckets))
        if self._last is not None:
            delta = bucket_increase(current, self._last)
            if delta and delta[-1][1] > 0:
                self._samples.append((now, delta))
        self._last = current
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def buckets(self, now: float) -> Buckets | None:
        """Cumulative buckets of what was observed in the window ending at ``now`` (``None``: nothing).

        Edges are those of the latest increase; an older increase with other edges (a restarted
        engine with another bucket layout) is left out rather than misread.
        """
        recent = [delta for t, delta in self._samples if now - t <= self.window_s]
        if not recent:
            return None
        edges = [le for le, _ in recent[-1]]
        sums = [0.0] * len(edges)
        for delta in recent:
            if [le for le, _ in delta] != edges:
                continue
            for i, (_, count) in enumerate(delta):
                sums[i] += count
        return tuple(zip(edges, sums, strict=True))


def finite(buckets: Sequence[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
    """The buckets as JSON can carry them: only finite edges (the +Inf count is the total anyway)."""
    if not buckets:
        return None
    return [(float(le), float(count)) for le, count in buckets if math.isfinite(le)] or None
