"""Bounded-memory accumulators for replay results: a log-bucket histogram and per-minute windows."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

__all__ = ["LogHistogram", "MinutePoint", "MinuteWindows", "nearest_rank"]


class LogHistogram:
    """Counts values in buckets that grow by ``ratio`` from ``low``; quantiles within ~ratio/2."""

    __slots__ = ("_buckets", "_log_ratio", "count", "low", "ratio")

    def __init__(self, low: float = 1e-4, ratio: float = 1.01) -> None:
        self.low = low
        self.ratio = ratio
        self._log_ratio = math.log(ratio)
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, value: float) -> None:
        index = 0 if value <= self.low else int(math.log(value / self.low) / self._log_ratio) + 1
        self._buckets[index] += 1
        self.count += 1

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the samples lie (the bucket's midpoint)."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                if index == 0:
                    return self.low
                return self.low * math.pow(self.ratio, index - 0.5)
        raise AssertionError("unreachable: rank <= count")


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of a small list (nan if empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class MinutePoint:
    """One minute of a replay: hit rate, TTFT p90 and load imbalance (busiest / mean requests)."""

    minute: int
    requests: int
    hit_rate: float
    ttft_p90_s: float
    imbalance: float | None


class MinuteWindows:
    """Per-minute accumulation, closed as time moves on, so memory stays bounded by one minute."""

    def __init__(self) -> None:
        self.points: list[MinutePoint] = []
        self._minute: int | None = None
        self._hits = 0
        self._tokens = 0
        self._ttfts: list[float] = []
        self._per_replica: Counter[str] = Counter()
        self._members: set[str] = set()

    def add(
        self, now: float, replica: str, members: tuple[str, ...], hit: int, tokens: int, ttft: float
    ) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self.close()
            self._minute = minute
        self._hits += hit
        self._tokens += tokens
        self._ttfts.append(ttft)
        self._per_replica[replica] += 1
        self._members.update(members)

    def close(self) -> None:
        """Close the open minute (call once more at the end of the trace)."""
        if self._minute is None:
            return
        requests = len(self._ttfts)
        members = len(self._members) or 1
        imbalance = None
        if requests >= 2 * members:  # near-empty minutes say nothing about balance
            imbalance = max(self._per_replica.values()) / (requests / members)
        self.points.append(
            MinutePoint(
                self._minute,
                requests,
                self._hits / self._tokens if self._tokens else 0.0,
                nearest_rank(self._ttfts, 0.9),
                imbalance,
            )
        )
        self._minute = None
        self._hits = self._tokens = 0
        self._ttfts = []
        self._per_replica = Counter()
        self._members = set()

    def imbalance_p90(self) -> float:
        return nearest_rank([p.imbalance for p in self.points if p.imbalance is not None], 0.9)
