"""Background jobs that run on one router of those sharing a state store, under a lease.

The job here is drain completion: with several routers, a replica is drained only when no router
has a request in flight on it, which no single router can see. The lease holder (any router; it
renews the lease every ``interval_s``) reads every router's heartbeat and marks a draining replica
``drained`` in the store once the in-flight count summed over all live routers has stayed at zero
for ``settle_s`` (longer than a heartbeat, so a request a peer started just before it learned of
the drain is seen). If the holder dies, its lease expires after ``ttl_s`` and another router takes
the job over where it stood: the state it works from is all in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pcache.fleet import Fleet
from pcache.router.membership import Membership
from pcache.state import StateError, StateStore

__all__ = ["Coordinator"]

log = logging.getLogger("pcache.router.coordinator")

LEASE = "coordinator"


class Coordinator:
    """Holds (or waits for) the coordinator lease and runs drain completion while holding it."""

    def __init__(
        self,
        *,
        store: StateStore,
        fleet: Fleet,
        membership: Membership,
        interval_s: float = 0.5,
        ttl_s: float = 3.0,
        settle_s: float = 1.5,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.membership = membership
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.holding = False
        self._idle_since: dict[str, float] = {}  # draining replica -> when all routers went idle on it
        self._task: asyncio.Task[None] | None = None

    def in_flight(self, replica: str, now: float) -> int:
        """Requests in flight on ``replica`` through every live router (this one counted live)."""
        own = self.fleet.get(replica).in_flight if replica in self.fleet else 0
        others = sum(
            r.in_flight.get(replica, 0)
            for r in self.membership.known
            if r.id != self.membership.id and not self.membership.lost(r, now)
        )
        return own + others

    async def tick(self) -> None:
        """Renew (or try to take) the lease; while holding it, complete the drains that are done."""
        try:
            held = await self.store.hold_lease(LEASE, self.membership.id, self.ttl_s)
            if held != self.holding:
                log.info("%s the coordinator lease", "took" if held else "lost")
            self.holding = held
            if not held:
                self._idle_since.clear()
                return
            state = await self.store.load()
            now = time.time()
            draining = {name for name, drain in state.drains.items() if drain == "draining"}
            for name in set(self._idle_since) - draining:
                del self._idle_since[name]
            for name in sorted(draining):
                if self.in_flight(name, now) > 0:
                    self._idle_since.pop(name, None)
                    continue
                since = self._idle_since.setdefault(name, now)
                if now - since >= self.settle_s:
                    await self.store.set_drain(name, "drained")
                    del self._idle_since[name]
                    log.info("replica %s drained on every router", name)
        except StateError:
            self.holding = False  # the store is unreachable: nobody can complete a drain now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pcache-coordinator")

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.holding:
            with contextlib.suppress(StateError):
                await self.store.release_lease(LEASE, self.membership.id)
            self.holding = False
