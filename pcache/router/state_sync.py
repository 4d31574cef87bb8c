"""Keeps this router's live operator state in line with a store that others write too.

Every ``interval_s`` (or at once, when the store announces a change) the router compares the
store's version with the one it last applied and reloads on a difference, so a pin, drain or
removal made through any router (or worker) is live here within about a second even if a change
notice was missed. While the store cannot be read the router keeps serving with the state it
last read; :attr:`StoreSync.error` says why (the status snapshot shows it and operator writes are
refused by the store itself), and the next successful look converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pcache.router.actions import OperatorActions
from pcache.state import StateError

__all__ = ["StoreSync"]

log = logging.getLogger("pcache.router.state")


class StoreSync:
    """The background task that reloads the operator state when another writer changed it."""

    def __init__(self, actions: OperatorActions, interval_s: float = 0.5) -> None:
        self.actions = actions
        self.interval_s = interval_s
        self.error: str | None = None  # why the store cannot be read now (None: it can)
        self.error_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pcache-state-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def once(self) -> None:
        """One look at the store: reload and apply if it changed; record whether it answered."""
        try:
            changes = await self.actions.sync()
        except StateError as exc:
            if self.error is None:
                self.error_since = time.time()
                log.warning("state store unreachable, serving with the last known state: %s", exc.message)
            self.error = exc.message
            return
        if self.error is not None:
            log.info("state store reachable again after %.1fs", time.time() - (self.error_since or 0))
        self.error, self.error_since = None, None
        if changes:
            log.info("operator state changed elsewhere: %s", "; ".join(changes))

    async def _run(self) -> None:
        store = self.actions.store
        while True:
            await self.once()
            try:
                await store.wait_change(self.interval_s)
            except StateError:
                continue  # the next look records it (wait_change already paused)
