"""Session homes shared between the routers of one state store, write-behind.

When this router gives a session a (new) home, :meth:`HomeShare.note` only appends it to a buffer
(microseconds, no I/O); a background task publishes the buffer every ``flush_s``. Another task
takes the homes the other routers published and hands them to the policy, so a session keeps its
home whichever router receives its next turn. Nothing on the request path waits for the store; if
a turn arrives before its home's notice, the policy routes it as it would have (HRW on the session
key), which is where the other router sent it too unless load had pushed it elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pcache.policy.base import SharesHomes
from pcache.state import StateError, StateStore

__all__ = ["HomeShare"]

log = logging.getLogger("pcache.router.homes")

_MAX_BUFFER = 50_000  # homes kept for publishing while the store is unreachable (oldest dropped)


class HomeShare:
    """Publishes this router's new session homes and adopts the other routers'."""

    def __init__(self, *, store: StateStore, policy: SharesHomes, origin: str, flush_s: float = 0.02) -> None:
        self.store = store
        self.policy = policy
        self.origin = origin
        self.flush_s = flush_s
        self.published = 0
        self.adopted = 0
        self._buffer: dict[str, str] = {}  # session -> replica (the latest home wins)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: list[tuple[str, str, str]] = []

    def note(self, session: str, replica: str) -> None:
        """A decision gave ``session`` the home ``replica`` (called on the request path)."""
        buffer = self._buffer
        buffer.pop(session, None)
        buffer[session] = replica
        if len(buffer) > _MAX_BUFFER:
            del buffer[next(iter(buffer))]
        self._wake.set()

    async def subscribe(self) -> None:
        """Start listening for the other routers' homes now (before this router takes traffic)."""
        try:
            self._pending = await self.store.next_homes(0)
        except StateError:
            self._pending = []  # the adopting task retries

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish(), name="pcache-homes-publish"),
            asyncio.create_task(self._adopt(), name="pcache-homes-adopt"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _publish(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_s)  # batch the homes of a burst into one notice
            self._wake.clear()
            batch, self._buffer = self._buffer, {}
            try:
                await self.store.publish_homes(self.origin, list(batch.items()))
                self.published += len(batch)
            except StateError:
                for session, replica in batch.items():  # keep them (newer ones win) and retry later
                    self._buffer.setdefault(session, replica)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _adopt(self) -> None:
        while True:
            homes, self._pending = self._pending, []
            with contextlib.suppress(StateError):  # next_homes paused; the state sync reports it
                homes.extend(await self.store.next_homes(0 if homes else 1.0))
            for origin, session, replica in homes:
                if origin != self.origin:
                    self.policy.adopt_home(session, replica)
                    self.adopted += 1
