"""Bounded-memory accumulators for replay results: a log-bucket histogram and per-minute windows."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
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
    """One minute of a replay: hit rate, TTFT p90, and load imbalance (busiest / mean load).

    Load is a replica's requests in flight averaged over the minute; ``imbalance`` is None for the
    trace's last, partial minute (the fleet drains) and for minutes without load.
    """

    minute: int
    requests: int
    hit_rate: float
    ttft_p90_s: float
    imbalance: float | None


class MinuteWindows:
    """Per-minute accumulation, closed as time moves on, so memory stays bounded by a few minutes.

    Each request adds its time in flight, split over the minutes it spans, to its replica's load.
    A minute is complete when the first request of a later minute arrives, since later requests
    cannot add to it.
    """

    def __init__(self) -> None:
        self.points: list[MinutePoint] = []
        self._minute: int | None = None
        self._hits = 0
        self._tokens = 0
        self._ttfts: list[float] = []
        self._busy: dict[int, defaultdict[str, float]] = {}  # minute -> replica -> seconds in flight
        self._members: set[str] = set()

    def add(
        self,
        now: float,
        finish: float,
        replica: str,
        members: tuple[str, ...],
        hit: int,
        tokens: int,
        ttft: float,
    ) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._close(partial=False)
            self._minute = minute
        self._hits += hit
        self._tokens += tokens
        self._ttfts.append(ttft)
        self._members.update(members)
        start = now
        while start < finish:
            m = int(start // 60)
            end = min(finish, (m + 1) * 60.0)
            busy = self._busy.get(m)
            if busy is None:
                busy = self._busy[m] = defaultdict(float)
            busy[replica] += end - start
            start = end

    def close(self) -> None:
        """Close the last (partial) minute at the end of the trace."""
        self._close(partial=True)
        self._busy.clear()

    def _close(self, partial: bool) -> None:
        if self._minute is None:
            return
        busy = self._busy.pop(self._minute, None) or defaultdict(float)
        members = self._members or set(busy)
        imbalance = None
        total = sum(busy.values())
        if not partial and total > 0 and members:
            imbalance = max(busy.values()) / (total / len(members))
        self.points.append(
            MinutePoint(
                self._minute,
                len(self._ttfts),
                self._hits / self._tokens if self._tokens else 0.0,
                nearest_rank(self._ttfts, 0.9),
                imbalance,
            )
        )
        self._minute = None
        self._hits = self._tokens = 0
        self._ttfts = []
        self._members = set()

    def imbalance_p90(self) -> float:
        return nearest_rank([p.imbalance for p in self.points if p.imbalance is not None], 0.9)
