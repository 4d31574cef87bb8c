"""Router membership over a shared store: heartbeats list every router, flag a silent one lost, and
carry each router's in-flight requests into the others' load (never counted twice)."""

from __future__ import annotations

import time

from pcache.fleet import Fleet
from pcache.ledger import Ledger
from pcache.router.membership import Membership
from pcache.state import MemoryStateStore
from pcache.state.model import RouterRecord


def _router(store: MemoryStateStore, name: str) -> tuple[Membership, Fleet]:
    fleet = Fleet()
    for replica in ("r1", "r2"):
        fleet.add(replica, f"http://127.0.0.1:9/{replica}")
    membership = Membership(store=store, fleet=fleet, ledger=Ledger(), lost_after_s=3.0)
    membership.id, membership.url = name, f"http://{name}"
    return membership, fleet


async def test_the_other_routers_in_flight_requests_are_in_this_routers_load() -> None:
    store = MemoryStateStore()
    a, fleet_a = _router(store, "a")
    b, fleet_b = _router(store, "b")
    fleet_a.begin("r1")
    fleet_a.begin("r1")
    await a.beat()
    await b.beat()
    assert fleet_b.get("r1").load == 2 and fleet_b.get("r2").load == 0
    assert fleet_a.get("r1").load == 2  # its own, not its own twice
    fleet_a.end("r1")
    await a.beat()
    await b.beat()
    assert fleet_b.get("r1").load == 1


async def test_peer_load_and_the_engines_gauges_are_not_added_up() -> None:
    store = MemoryStateStore()
    a, fleet_a = _router(store, "a")
    b, fleet_b = _router(store, "b")
    fleet_a.begin("r1")
    await a.beat()
    await b.beat()
    entry = fleet_b.get("r1")
    assert entry.peer_in_flight == 1
    assert entry.load == max(entry.peer_in_flight, entry.external_load)  # the engine counts A's too


async def test_a_router_silent_past_the_threshold_is_lost_and_its_load_forgotten() -> None:
    store = MemoryStateStore()
    b, fleet_b = _router(store, "b")
    now = time.time()
    silent = RouterRecord(
        id="a", url="http://a", admin_url="", version="0", started_at=now - 60, heartbeat_at=now - 10,
        in_flight={"r1": 5},
    )  # fmt: skip
    await store.heartbeat(silent, forget_after_s=300)
    await b.beat()
    rows = b.rows()
    assert [(r.id, r.this_router, r.lost) for r in rows] == [("b", True, False), ("a", False, True)]
    assert fleet_b.get("r1").load == 0


async def test_leaving_removes_the_record() -> None:
    store = MemoryStateStore()
    a, _ = _router(store, "a")
    await a.beat()
    assert [r.id for r in await store.routers()] == ["a"]
    await a.stop()
    assert await store.routers() == []
