"""The Redis state store against a real redis-server: the same contract as the sqlite store, guarded
writes atomic across stores (two routers), change notices, and a clear error when it is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pcache.state import ReplicaRecord, StateError, Tier1Record, open_store
from pcache.state.model import RouterRecord
from pcache.state.redis_store import RedisStateStore, redacted
from tests.harness.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture()
async def store(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[RedisStateStore]:
    opened = open_store(f"{redis_server.url}?prefix={request.node.name}")
    assert isinstance(opened, RedisStateStore)
    yield opened
    await opened.reset()
    await opened.close()


async def test_round_trip_of_every_kind_of_record(store: RedisStateStore) -> None:
    await store.put_tier1(Tier1Record(name="sys", text="You are helpful.", copies=2, replicas=("r1", "r2")))
    await store.set_drain("r3", "draining")
    await store.put_replica(ReplicaRecord(name="r9", url="http://127.0.0.1:9", group="chat", weight=2.0))
    await store.remove_replica("r4")
    state = await store.load()
    assert state.tier1["sys"] == Tier1Record(
        name="sys", text="You are helpful.", copies=2, replicas=("r1", "r2")
    )
    assert state.drains == {"r3": "draining"}
    assert state.replicas["r9"] == ReplicaRecord(
        name="r9", url="http://127.0.0.1:9", group="chat", weight=2.0
    )
    assert state.removed == frozenset({"r4"})
    assert await store.delete_tier1("sys") is True and await store.delete_tier1("sys") is False
    await store.remove_replica("r9")
    await store.put_replica(ReplicaRecord(name="r4", url="http://127.0.0.1:4"))
    state = await store.load()
    assert state.tier1 == {} and "r9" in state.removed and "r4" not in state.removed


async def test_prefixes_keep_fleets_apart(store: RedisStateStore, redis_server: RedisServer) -> None:
    other = RedisStateStore(f"{redis_server.url}?prefix=another-fleet")
    try:
        await store.set_drain("r1", "draining")
        assert (await other.load()).drains == {}
    finally:
        await other.reset()
        await other.close()


async def test_two_routers_draining_the_last_two_replicas_at_once_cannot_both_succeed(
    store: RedisStateStore, redis_server: RedisServer
) -> None:
    """Each router sees the other replica routable; the store's script decides, atomically."""
    second = RedisStateStore(f"{redis_server.url}?prefix={store.prefix}")
    try:
        for _ in range(20):
            results = await asyncio.gather(
                store.set_drain("a", "draining", keep_routable=["b"]),
                second.set_drain("b", "draining", keep_routable=["a"]),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, StateError)]
            assert len(refused) == 1 and refused[0].status == 409 and refused[0].code == "last_routable"
            assert len((await store.load()).drains) == 1
            await store.set_drain("a", None)
            await store.set_drain("b", None)
    finally:
        await second.close()


async def test_a_write_is_announced_to_every_other_store(
    store: RedisStateStore, redis_server: RedisServer
) -> None:
    second = RedisStateStore(f"{redis_server.url}?prefix={store.prefix}")
    try:
        await second.wait_change(0.01)  # subscribes
        before = await second.version()
        started = time.monotonic()
        waiting = asyncio.ensure_future(second.wait_change(30))
        await asyncio.sleep(0)
        await store.put_tier1(Tier1Record(name="sys", text="x"))
        await waiting
        assert time.monotonic() - started < 30  # woken by the notice, not the timeout
        assert await second.version() > before
        assert "sys" in (await second.load()).tier1
    finally:
        await second.close()


async def test_an_unreachable_store_fails_each_call_at_once_with_a_clear_503(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started: nothing listens on its port
    store = RedisStateStore(server.url)
    try:
        for call in (store.load(), store.version(), store.set_drain("r1", "draining")):
            with pytest.raises(StateError) as failed:
                await call
            assert failed.value.status == 503 and failed.value.code == "state_unavailable"
            assert failed.value.retry_after == 1 and "unreachable" in failed.value.message
    finally:
        await store.close()


def test_a_password_never_reaches_a_message() -> None:
    assert redacted("redis://user:s3cret@db.internal:6379/0") == "redis://user:***@db.internal:6379/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_heartbeats_list_routers_and_drop_long_silent_ones(store: RedisStateStore) -> None:
    now = time.time()

    def record(name: str, at: float) -> RouterRecord:
        return RouterRecord(
            id=name, url=f"http://{name}", admin_url="", version="0", started_at=at, heartbeat_at=at,
            in_flight={"r1": 2},
        )  # fmt: skip

    await store.heartbeat(record("old", now - 1000), forget_after_s=300)
    await store.heartbeat(record("a", now), forget_after_s=300)
    assert [r.id for r in await store.routers()] == ["a"]
    assert (await store.routers())[0].in_flight == {"r1": 2}
    await store.leave("a")
    assert await store.routers() == []


async def test_session_homes_reach_the_other_stores(
    store: RedisStateStore, redis_server: RedisServer
) -> None:
    second = RedisStateStore(f"{redis_server.url}?prefix={store.prefix}")
    try:
        assert await second.next_homes(0.01) == []  # subscribes
        await store.publish_homes("router-a", [("s1", "r2"), ("s2", "r3")])
        received: list[tuple[str, str, str]] = []
        while len(received) < 2:
            received += await second.next_homes(30)
        assert received == [("router-a", "s1", "r2"), ("router-a", "s2", "r3")]
    finally:
        await second.close()


async def test_a_lease_is_held_by_one_store_at_a_time_and_expires(
    store: RedisStateStore, redis_server: RedisServer
) -> None:
    second = RedisStateStore(f"{redis_server.url}?prefix={store.prefix}")
    try:
        assert await store.hold_lease("job", "a", ttl_s=0.2)
        assert not await second.hold_lease("job", "b", ttl_s=0.2)
        assert await store.hold_lease("job", "a", ttl_s=0.2)  # renewing
        deadline = time.monotonic() + 10
        while not await second.hold_lease("job", "b", ttl_s=5):
            assert time.monotonic() < deadline, "the lease never expired"
            await asyncio.sleep(0.05)
        await store.release_lease("job", "a")  # not a's any more: nothing happens
        assert not await store.hold_lease("job", "a", ttl_s=5)
        await second.release_lease("job", "b")
        assert await store.hold_lease("job", "a", ttl_s=5)
    finally:
        await second.close()
