"""Cumulative histogram buckets: merge across replicas and read quantiles like Prometheus does.

Buckets are ``(le, cumulative_count)`` pairs in ascending ``le`` order, ``+Inf`` last when present,
exactly as :class:`pcache.engines.base.ReplicaStats` carries them. Fleet percentiles come from
merged buckets, never from averaging per-replica percentiles.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

__all__ = ["Buckets", "merge_buckets", "quantile"]

Buckets = tuple[tuple[float, float], ...]


def _count_at(buckets: Sequence[tuple[float, float]], edge: float) -> float:
    """A replica's cumulative count at ``edge``: the count at its largest own edge <= ``edge``."""
    edges = [le for le, _ in buckets]
    index = bisect.bisect_right(edges, edge) - 1
    return buckets[index][1] if index >= 0 else 0.0


def merge_buckets(bucket_sets: Iterable[Sequence[tuple[float, float]] | None]) -> Buckets:
    """Sum cumulative histograms whose edges may differ (the union of edges, counts carried forward).

    Where a replica has no edge at some ``le`` its cumulative count there is that of its nearest
    lower edge, a lower bound that keeps the merged histogram cumulative. A replica whose capture
    lacks ``+Inf`` contributes its last count there.
    """
    sets = [sorted(buckets) for buckets in bucket_sets if buckets]
    if not sets:
        return ()
    edges = sorted({le for buckets in sets for le, _ in buckets})
    return tuple((edge, math.fsum(_count_at(buckets, edge) for buckets in sets)) for edge in edges)


def quantile(buckets: Sequence[tuple[float, float]] | None, q: float) -> float | None:
    """The ``q``-quantile (0..1) of cumulative buckets, interpolated like PromQL ``histogram_quantile``.

    Linear interpolation inside the bucket holding the rank, the lowest bucket starting at 0 (when
    its bound is positive), and the upper bound of the last finite bucket when the rank falls in
    ``+Inf``. Returns ``None`` with no observations. Unlike Prometheus, a partial capture without a
    ``+Inf`` bucket is read with its last bucket as the total rather than giving up.
    """
    if not buckets:
        return None
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    counts: list[float] = []
    running = 0.0
    for _, count in ordered:
        running = max(running, count)  # tolerate non-monotonic scrapes, as Prometheus does
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = bisect.bisect_left(counts, rank)
    index = min(index, len(ordered) - 1)
    upper = ordered[index][0]
    if math.isinf(upper):
        return ordered[index - 1][0] if index > 0 else None
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = ordered[index - 1][0], counts[index - 1]
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket
