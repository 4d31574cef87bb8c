"""Recent errors by kind, per replica and for the fleet: the error half of the golden signals.

Prometheus counters (``pcache_upstream_errors``, ``pcache_responses``) only grow; an operator at
3 a.m. needs to know whether errors are happening *now*. :class:`ErrorWindow` counts the same events
in fixed time slots and keeps only the last few, so a burst of failures shows up at once and is gone
one window after it ends. The kinds do not overlap, so they add up:

- ``router_5xx``: responses the router sent with a 5xx status (every attempt failed, no replica,
  or the last replica's own 5xx passed through);
- ``upstream``: attempts to a replica that failed before the client saw a byte (connect, a
  retryable status, a broken body), whether or not a retry then saved the request;
- ``mid_stream``: streams that failed after their first byte reached the client;
- ``retries``: attempts moved to another replica (counted on the replica that was left).

Call from one thread (the router's event loop); every method is a few dictionary operations.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

__all__ = ["ERROR_KINDS", "ErrorKind", "ErrorWindow"]

ErrorKind = Literal["router_5xx", "upstream", "mid_stream", "retries"]
ERROR_KINDS: tuple[ErrorKind, ...] = ("router_5xx", "upstream", "mid_stream", "retries")
_RESPONSES = "responses"  # denominator: responses sent (per replica: by that replica)
_FLEET = ""  # the key of fleet-wide counts (replica names are never empty)


class ErrorWindow:
    """Counts of error events over the last ``slots`` x ``slot_s`` seconds."""

    def __init__(
        self, *, slot_s: float = 10.0, slots: int = 6, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if slot_s <= 0 or slots < 1:
            raise ValueError("slot_s must be > 0 and slots >= 1")
        self.slot_s = slot_s
        self.slots = slots
        self._clock = clock
        self._counts: dict[int, dict[str, Counter[str]]] = {}  # slot index -> replica -> counts

    @property
    def window_s(self) -> float:
        """The span the counts cover once the router has run that long."""
        return self.slot_s * self.slots

    # ---- recording ------------------------------------------------------------------------------

    def _slot(self) -> dict[str, Counter[str]]:
        index = int(self._clock() // self.slot_s)
        slot = self._counts.get(index)
        if slot is None:
            slot = self._counts[index] = {}
            for old in [i for i in self._counts if i <= index - self.slots]:
                del self._counts[old]
        return slot

    def _add(self, replica: str | None, what: str) -> None:
        slot = self._slot()
        for key in (_FLEET, replica) if replica else (_FLEET,):
            counts = slot.get(key)
            if counts is None:
                counts = slot[key] = Counter()
            counts[what] += 1

    def response(self, status: int, replica: str | None = None, *, mid_stream: bool = False) -> None:
        """A response was sent (``replica`` served it, when one did)."""
        self._add(replica, _RESPONSES)
        if mid_stream:
            self._add(replica, "mid_stream")
        elif status >= 500:
            self._add(replica, "router_5xx")

    def upstream_error(self, replica: str) -> None:
        """An attempt on ``replica`` failed before the client saw a byte."""
        self._add(replica, "upstream")

    def retry(self, replica: str) -> None:
        """A request left ``replica`` for another attempt elsewhere."""
        self._add(replica, "retries")

    # ---- reading --------------------------------------------------------------------------------

    def _sum(self, replica: str | None) -> Counter[str]:
        key = replica or _FLEET
        oldest = int(self._clock() // self.slot_s) - self.slots
        totals: Counter[str] = Counter()
        for index, slot in self._counts.items():
            if index > oldest and key in slot:
                totals.update(slot[key])
        return totals

    def counts(self, replica: str | None = None) -> dict[ErrorKind, int]:
        """Events of each kind in the window, for ``replica`` or (``None``) the whole fleet."""
        totals = self._sum(replica)
        return {kind: totals[kind] for kind in ERROR_KINDS}

    def error_rate(self, replica: str | None = None) -> float | None:
        """Share of the window's work that failed; ``None`` when there was none.

        Fleet: failed responses (``router_5xx`` + ``mid_stream``) per response sent, what clients
        saw. Replica: failed attempts (``upstream`` + ``mid_stream`` + ``router_5xx``) per attempt on
        it (its responses plus its failed attempts), so a replica whose failures retries hide still
        shows them.
        """
        totals = self._sum(replica)
        failed = totals["router_5xx"] + totals["mid_stream"]
        work = totals[_RESPONSES]
        if replica is not None:
            failed += totals["upstream"]
            work += totals["upstream"]
        return failed / work if work else None
