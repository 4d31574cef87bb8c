"""Router membership: every router sharing a state store heartbeats its record there.

Each beat (every ``interval_s``) publishes who this router is, its request rate and its requests in
flight per replica, then reads every router's record: the others' in-flight counts become the
fleet's peer load (so the load bound counts every router's requests, not one router's), and the
records are what ``GET /api/v1/routers`` lists, a router silent for ``lost_after_s`` flagged lost
(and its load no longer counted). With the store unreachable the last records are kept, flagged by
their age; a lost router's record is dropped after ``forget_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter

from pcache import __version__
from pcache.api import RouterStatus
from pcache.fleet import Fleet
from pcache.ledger import Ledger
from pcache.state import StateError, StateStore
from pcache.state.model import RouterRecord

__all__ = ["Membership"]

log = logging.getLogger("pcache.router.membership")


class Membership:
    """This router's heartbeat and its view of the other routers."""

    def __init__(
        self,
        *,
        store: StateStore,
        fleet: Fleet,
        ledger: Ledger,
        interval_s: float = 0.5,
        lost_after_s: float = 3.0,
        forget_after_s: float = 300.0,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.ledger = ledger
        self.interval_s = interval_s
        self.lost_after_s = lost_after_s
        self.forget_after_s = forget_after_s
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.url = ""
        self.admin_url = ""
        self.started_at = time.time()
        self.known: list[RouterRecord] = []
        self._task: asyncio.Task[None] | None = None

    def record(self, now: float) -> RouterRecord:
        return RouterRecord(
            id=self.id,
            url=self.url,
            admin_url=self.admin_url,
            version=__version__,
            started_at=self.started_at,
            heartbeat_at=now,
            requests_per_s=round(self.ledger.requests_per_s(now=now), 3),
            in_flight={e.name: e.in_flight for e in self.fleet.entries() if e.in_flight},
        )

    def lost(self, record: RouterRecord, now: float) -> bool:
        return now - record.heartbeat_at > self.lost_after_s

    async def beat(self) -> None:
        """Publish this router's record, read everyone's, and update the fleet's peer load."""
        now = time.time()
        try:
            await self.store.heartbeat(self.record(now), self.forget_after_s)
            self.known = await self.store.routers()
        except StateError:
            pass  # the state sync reports the outage; the records age into "lost" meanwhile
        peers: Counter[str] = Counter()
        for record in self.known:
            if record.id != self.id and not self.lost(record, now):
                peers.update(record.in_flight)
        self.fleet.set_peer_in_flight(peers)

    def rows(self) -> list[RouterStatus]:
        """Every known router (this one first), for the admin API."""
        now = time.time()
        records = {r.id: r for r in self.known}
        records[self.id] = self.record(now)  # always current for this router
        ordered = [records.pop(self.id), *sorted(records.values(), key=lambda r: r.id)]
        return [
            RouterStatus(
                id=r.id,
                url=r.url,
                admin_url=r.admin_url,
                version=r.version,
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
                heartbeat_age_s=round(max(0.0, now - r.heartbeat_at), 3),
                requests_per_s=r.requests_per_s,
                in_flight=sum(r.in_flight.values()),
                lost=r.id != self.id and self.lost(r, now),
                this_router=r.id == self.id,
            )
            for r in ordered
        ]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pcache-membership")

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """Stop beating and leave the membership (others stop counting this router's load)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.store.leave(self.id)
        except StateError as exc:
            log.warning("could not leave the router membership: %s", exc.message)
