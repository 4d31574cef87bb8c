"""Per-scrape deltas of Prometheus counters, robust to resets when a replica restarts."""

from __future__ import annotations

import time

__all__ = ["CounterRate", "increase"]


def increase(value: float, previous: float) -> float:
    """A counter's increase from ``previous`` to ``value``; a lower value means it was reset to 0."""
    return value if value < previous else value - previous


class CounterRate:
    """Tracks one counter across scrapes.

    ``update`` returns the increase since the previous scrape. A value lower than the previous one
    means the process restarted and the counter began again at zero, so the increase is the new
    value itself (as PromQL ``increase`` treats resets). ``total`` sums the increases.
    """

    __slots__ = ("last", "last_at", "rate", "total")

    def __init__(self) -> None:
        self.last: float | None = None
        self.last_at: float | None = None
        self.rate: float | None = None  # increase per second over the latest interval
        self.total = 0.0

    def update(self, value: float | None, at: float | None = None) -> float | None:
        """Feed a scrape's value; returns the increase since the last one (``None`` the first time).

        A missing value (``None``) leaves the state alone and returns ``None``.
        """
        if value is None:
            return None
        now = time.monotonic() if at is None else at
        previous, previous_at = self.last, self.last_at
        self.last, self.last_at = value, now
        if previous is None or previous_at is None:
            return None
        delta = increase(value, previous)
        self.total += delta
        elapsed = now - previous_at
        self.rate = delta / elapsed if elapsed > 0 else None
        return delta

    def reset(self) -> None:
        """Forget the history (a replica was replaced)."""
        self.last = self.last_at = self.rate = None
        self.total = 0.0
