"""Operator state survives restarts (even SIGKILL), never blocks the event loop, refuses what it
cannot trust (a truncated or corrupt file, an unknown scheme) and fails writes with a clear error."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pcache.state import (
    MemoryStateStore,
    ReplicaRecord,
    SqliteStateStore,
    StateError,
    StateStore,
    Tier1Record,
    open_store,
    reset_sqlite,
)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    opened: StateStore = (
        SqliteStateStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStateStore()
    )
    yield opened
    await opened.close()


async def test_round_trip_of_every_kind_of_record(store: StateStore) -> None:
    await store.put_tier1(Tier1Record(name="sys", text="You are helpful.", copies=2, replicas=("r1", "r2")))
    await store.set_drain("r3", "draining")
    await store.put_replica(ReplicaRecord(name="r9", url="http://127.0.0.1:9", group="chat", weight=2.0))
    await store.remove_replica("r4")
    state = await store.load()
    assert state.tier1["sys"].replicas == ("r1", "r2")
    assert state.tier1["sys"].copies == 2
    assert state.drains == {"r3": "draining"}
    assert state.replicas["r9"] == ReplicaRecord(
        name="r9", url="http://127.0.0.1:9", group="chat", weight=2.0
    )
    assert state.removed == frozenset({"r4"})


async def test_undrain_and_unpin_remove_the_records(store: StateStore) -> None:
    await store.put_tier1(Tier1Record(name="sys", text="x"))
    await store.set_drain("r1", "drained")
    assert await store.delete_tier1("sys") is True
    assert await store.delete_tier1("sys") is False
    await store.set_drain("r1", None)
    state = await store.load()
    assert state.tier1 == {}
    assert state.drains == {}


async def test_removing_a_replica_forgets_its_drain_and_readding_unremoves_it(store: StateStore) -> None:
    await store.put_replica(ReplicaRecord(name="r5", url="http://127.0.0.1:5"))
    await store.set_drain("r5", "draining")
    await store.remove_replica("r5")
    state = await store.load()
    assert "r5" not in state.replicas and "r5" not in state.drains and "r5" in state.removed
    await store.put_replica(ReplicaRecord(name="r5", url="http://127.0.0.1:5"))
    assert "r5" not in (await store.load()).removed


async def test_bad_drain_state_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="drain state"):
        await store.set_drain("r1", "sleeping")


async def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SqliteStateStore(path)
    await first.put_tier1(Tier1Record(name="tools", text="tool defs", source="config"))
    await first.close()
    again = SqliteStateStore(path)
    assert (await again.load()).tier1["tools"].source == "config"
    await again.close()


async def test_sqlite_write_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = (
        "import asyncio, os, signal\n"
        "from pcache.state import SqliteStateStore, Tier1Record\n"
        "async def main():\n"
        f"    s = SqliteStateStore({str(path)!r})\n"
        "    await s.put_tier1(Tier1Record(name='pinned', text='t', replicas=('r2',)))\n"
        "    await s.set_drain('r1', 'draining')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9
    store = SqliteStateStore(path)
    state = await store.load()
    await store.close()
    assert state.tier1["pinned"].replicas == ("r2",)
    assert state.drains == {"r1": "draining"}


async def test_concurrent_writers_leave_consistent_state(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")

    async def writer(worker: int) -> None:
        for i in range(50):
            await store.put_tier1(Tier1Record(name=f"p{worker}-{i}", text="x"))
            if i % 2:
                await store.delete_tier1(f"p{worker}-{i}")

    await asyncio.gather(*(writer(w) for w in range(4)))
    names = set((await store.load()).tier1)
    await store.close()
    assert names == {f"p{w}-{i}" for w in range(4) for i in range(0, 50, 2)}


async def test_every_write_changes_the_version(store: StateStore) -> None:
    seen = {await store.version()}
    await store.put_tier1(Tier1Record(name="sys", text="x"))
    seen.add(await store.version())
    await store.set_drain("r1", "draining")
    seen.add(await store.version())
    assert len(seen) == 3


async def test_a_guarded_drain_is_refused_when_every_other_replica_is_drained(store: StateStore) -> None:
    await store.set_drain("r1", "draining", keep_routable=["r2"])
    with pytest.raises(StateError) as refused:
        await store.set_drain("r2", "draining", keep_routable=["r1"])
    assert refused.value.status == 409 and refused.value.code == "last_routable"
    await store.remove_replica("r3")
    with pytest.raises(StateError, match="removing r4 was refused"):
        await store.remove_replica("r4", keep_routable=["r1", "r3"])
    assert (await store.load()).drains == {"r1": "draining"}


def test_open_store_understands_locations(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStateStore)
    assert isinstance(open_store(f"sqlite://{tmp_path / 'a.db'}"), SqliteStateStore)
    assert isinstance(open_store(str(tmp_path / "b.db")), SqliteStateStore)


@pytest.mark.parametrize("location", ["foo://x", "http://127.0.0.1:6379/0", "file://state.db"])
def test_an_unknown_scheme_is_refused_and_never_becomes_a_file(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: `state: foo://x` created a sqlite file under ./foo:/x."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StateError, match="unknown state scheme"):
        open_store(location)
    assert list(tmp_path.iterdir()) == []


def test_unopenable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="cannot open state store"):
        SqliteStateStore(blocker / "state.db")


def test_a_state_file_truncated_to_zero_bytes_is_refused_naming_it(tmp_path: Path) -> None:
    """Regression: a 0-byte state file was silently taken as empty (pins, drains, removals lost)."""
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    with pytest.raises(StateError, match=r"state file .*state\.db is empty \(0 bytes") as refused:
        SqliteStateStore(path)
    assert "\n" not in refused.value.message and "--reset-state" in refused.value.message


async def test_a_corrupt_state_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    for i in range(200):
        await store.put_tier1(Tier1Record(name=f"p{i}", text="x" * 200))
    await store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated mid-file
    with pytest.raises(StateError, match=r"state file .*state\.db is (corrupt|not a readable)"):
        SqliteStateStore(path)
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StateError, match=r"state file .*state\.db is not a readable state store"):
        SqliteStateStore(path)


def test_reset_moves_a_refused_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    aside = reset_sqlite(path)
    assert aside is not None and aside.exists() and not path.exists()
    assert reset_sqlite(path) is None


async def test_a_write_while_another_process_holds_the_lock_is_a_503_and_never_blocks_the_loop(
    tmp_path: Path,
) -> None:
    """Regression: the write froze the event loop for 5 s and returned a bare 500."""
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        ticks = 0
        write = asyncio.ensure_future(store.put_tier1(Tier1Record(name="sys", text="x")))
        while not write.done():  # the loop keeps running while the write waits for the lock
            ticks += 1
            await asyncio.sleep(0.01)
        with pytest.raises(StateError) as failed:
            write.result()
        assert ticks > 1
        assert failed.value.status == 503 and failed.value.code == "state_locked"
        assert failed.value.retry_after == 1 and str(path) in failed.value.message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.put_tier1(Tier1Record(name="sys", text="x"))  # the store works once the lock is gone
    assert list((await store.load()).tier1) == ["sys"]
    await store.close()


async def test_a_state_file_from_before_joining_replicas_opens_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE replicas (name TEXT PRIMARY KEY, url TEXT NOT NULL, engine TEXT NOT NULL, grp TEXT, "
        "weight REAL NOT NULL);"
        "INSERT INTO replicas VALUES ('r9', 'http://127.0.0.1:9', 'auto', NULL, 1.0);"
    )
    old.commit()
    old.close()
    store = SqliteStateStore(path)
    assert (await store.load()).replicas["r9"] == ReplicaRecord(name="r9", url="http://127.0.0.1:9")
    await store.put_replica(ReplicaRecord(name="r8", url="http://127.0.0.1:8", joining=True))
    assert (await store.load()).replicas["r8"].joining
    await store.close()
