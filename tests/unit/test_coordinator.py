"""Drain completion across routers under a lease: one router holds it, a draining replica becomes
drained only when no live router has a request on it, and a holder that dies leaves the job to
another router."""

from __future__ import annotations

import asyncio
import time

from pcache.fleet import Fleet
from pcache.ledger import Ledger
from pcache.router.coordinator import Coordinator
from pcache.router.membership import Membership
from pcache.state import MemoryStateStore


def _router(store: MemoryStateStore, name: str, ttl_s: float = 3.0) -> tuple[Coordinator, Fleet, Membership]:
    fleet = Fleet()
    for replica in ("r1", "r2"):
        fleet.add(replica, f"http://127.0.0.1:9/{replica}")
    membership = Membership(store=store, fleet=fleet, ledger=Ledger())
    membership.id = name
    coordinator = Coordinator(store=store, fleet=fleet, membership=membership, ttl_s=ttl_s, settle_s=0.0)
    return coordinator, fleet, membership


async def test_only_one_router_holds_the_lease_and_another_takes_over_when_it_stops() -> None:
    store = MemoryStateStore()
    a, _, _ = _router(store, "a", ttl_s=0.05)
    b, _, _ = _router(store, "b", ttl_s=0.05)
    await a.tick()
    await b.tick()
    assert a.holding and not b.holding
    deadline = time.monotonic() + 10
    while not b.holding:  # a no longer renews (it died): its lease expires
        assert time.monotonic() < deadline, "b never took the lease over"
        await asyncio.sleep(0.01)
        await b.tick()
    await a.tick()
    assert not a.holding


async def test_a_drain_completes_only_when_no_router_has_a_request_on_the_replica() -> None:
    store = MemoryStateStore()
    a, _, membership_a = _router(store, "a")
    _, fleet_b, membership_b = _router(store, "b")
    await store.set_drain("r1", "draining")
    fleet_b.begin("r1")  # router B still has a request on r1
    await membership_b.beat()
    await membership_a.beat()
    await a.tick()
    await a.tick()
    assert (await store.load()).drains == {"r1": "draining"}
    fleet_b.end("r1")
    await membership_b.beat()
    await membership_a.beat()
    await a.tick()
    assert (await store.load()).drains == {"r1": "drained"}


async def test_a_router_that_does_not_hold_the_lease_never_completes_a_drain() -> None:
    store = MemoryStateStore()
    a, _, _ = _router(store, "a")
    b, _, _ = _router(store, "b")
    await a.tick()
    await store.set_drain("r1", "draining")
    await b.tick()
    assert not b.holding and (await store.load()).drains == {"r1": "draining"}
