"""Online detection of hot prompt prefixes: blocks shared by many distinct sessions.

A block hash stands for the whole prefix up to it (hashes are chained), so counting the distinct
sessions that pass through each leading block finds shared system prompts and tool definitions
without knowing them in advance. When a request has no session, the block right after each prefix
block stands in for it: a prefix followed by many different continuations is shared, while a
conversation only ever extends itself. Memory is bounded by an LRU over entries, and each entry
keeps only a capped set of session identities. The share of load of a prefix is measured over the
current and the previous window of ``window`` requests, so it follows traffic as it changes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["HotPrefix", "HotPrefixDetector"]


@dataclass(frozen=True, slots=True)
class HotPrefix:
    """A hot prefix: its key (last block hash), depth in blocks, sessions seen (capped), share."""

    key: int
    depth: int
    sessions: int
    requests: int
    share: float


class _Entry:
    __slots__ = ("current", "depth", "first", "identities", "previous", "requests", "sessions", "window")

    def __init__(self, depth: int, first: int, window: int) -> None:
        self.depth = depth
        self.first = first  # request number at first sighting
        self.requests = 0
        self.sessions = 0
        self.identities: set[Hashable] | None = set()
        self.window = window
        self.current = 0  # requests through this prefix in window ``window``
        self.previous = 0  # ... and in the window before it


class HotPrefixDetector:
    """Tracks leading blocks of requests and says how deep the hot (shared) prefix of each goes.

    A block is hot once ``min_sessions`` distinct sessions have passed through it. ``observe``
    books a request and returns the depth of its deepest hot block (0 if none); ``depth`` answers
    the same without booking.
    """

    def __init__(
        self,
        min_sessions: int = 8,
        max_entries: int = 200_000,
        *,
        max_depth: int = 512,
        window: int = 1024,
        session_cap: int = 64,
    ) -> None:
        if min_sessions < 1 or max_entries < 1 or max_depth < 1 or window < 1:
            raise ValueError("min_sessions, max_entries, max_depth and window must be >= 1")
        self.min_sessions = min_sessions
        self.max_entries = max_entries
        self.max_depth = max_depth
        self.window = window
        self._session_cap = max(session_cap, min_sessions)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._total = 0

    @property
    def requests(self) -> int:
        """Requests observed so far."""
        return self._total

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, blocks: Sequence[int], session: Hashable | None = None) -> int:
        """Book one request; return the depth of its deepest hot block (0 if none).

        With a session, the walk stops after the first block no other session has passed through
        (no deeper block can be shared either); without one, every leading block up to
        ``max_depth`` is counted, since continuations stand in for sessions.
        """
        self._total += 1
        total = self._total
        window = (total - 1) // self.window
        entries = self._entries
        deepest = 0
        n = min(len(blocks), self.max_depth)
        for i in range(n):
            block = blocks[i]
            entry = entries.get(block)
            if entry is None:
                entry = _Entry(i + 1, total, window)
                entries[block] = entry
                if len(entries) > self.max_entries:
                    entries.popitem(last=False)
            else:
                entries.move_to_end(block)
                if entry.window != window:
                    entry.previous = entry.current if entry.window == window - 1 else 0
                    entry.current = 0
                    entry.window = window
            entry.requests += 1
            entry.current += 1
            identities = entry.identities
            if identities is not None:
                if session is not None:
                    identities.add(session)
                else:
                    identities.add(blocks[i + 1] if i + 1 < len(blocks) else None)
                entry.sessions = len(identities)
                if entry.sessions >= self._session_cap:
                    entry.identities = None
            if entry.sessions >= self.min_sessions:
                deepest = i + 1
            elif session is not None and entry.sessions < 2:
                break
        return deepest

    def depth(self, blocks: Sequence[int]) -> int:
        """The depth of the deepest hot block of ``blocks``, without booking anything."""
        deepest = 0
        entries = self._entries
        for i in range(min(len(blocks), self.max_depth)):
            entry = entries.get(blocks[i])
            if entry is None:
                break
            if entry.sessions >= self.min_sessions:
                deepest = i + 1
        return deepest

    def share(self, key: int) -> float:
        """The prefix's share of requests over the current and previous windows (0 if unknown)."""
        entry = self._entries.get(key)
        return 0.0 if entry is None else self._share(entry)

    def shared_depth(self, blocks: Sequence[int], min_share: float) -> int:
        """How many leading blocks each carry at least ``min_share`` of all requests."""
        entries = self._entries
        depth = 0
        for i in range(min(len(blocks), self.max_depth)):
            entry = entries.get(blocks[i])
            if entry is None or entry.requests < self.min_sessions or self._share(entry) < min_share:
                break
            depth = i + 1
        return depth

    def hot(self, top: int | None = None) -> list[HotPrefix]:
        """Hot prefixes, highest share first (then deepest)."""
        found = [
            HotPrefix(key, e.depth, e.sessions, e.requests, self._share(e))
            for key, e in self._entries.items()
            if e.sessions >= self.min_sessions
        ]
        found.sort(key=lambda h: (-h.share, -h.depth, h.key))
        return found if top is None else found[:top]

    def _share(self, entry: _Entry) -> float:
        total = self._total
        window = (total - 1) // self.window if total else 0
        if entry.window == window:
            current, previous = entry.current, entry.previous
        elif entry.window == window - 1:
            current, previous = 0, entry.current
        else:
            return 0.0
        since = max(entry.first, (window - 1) * self.window + 1, 1)
        # A prefix first seen a moment ago is measured against at least a window of traffic (or all
        # of it, early on), so two quick requests do not make it look like all the load.
        return min(1.0, (current + previous) / max(total - since + 1, min(total, self.window)))
