"""Operator state survives restarts, including a SIGKILL right after a write."""

from __future__ import annotations

import subprocess
import sys
import threading
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
)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        return SqliteStateStore(tmp_path / "state.db")
    return MemoryStateStore()


def test_round_trip_of_every_kind_of_record(store: StateStore) -> None:
    store.put_tier1(Tier1Record(name="sys", text="You are helpful.", copies=2, replicas=("r1", "r2")))
    store.set_drain("r3", "draining")
    store.put_replica(ReplicaRecord(name="r9", url="http://127.0.0.1:9", group="chat", weight=2.0))
    store.remove_replica("r4")
    state = store.load()
    assert state.tier1["sys"].replicas == ("r1", "r2")
    assert state.tier1["sys"].copies == 2
    assert state.drains == {"r3": "draining"}
    assert state.replicas["r9"] == ReplicaRecord(
        name="r9", url="http://127.0.0.1:9", group="chat", weight=2.0
    )
    assert state.removed == frozenset({"r4"})


def test_undrain_and_unpin_remove_the_records(store: StateStore) -> None:
    store.put_tier1(Tier1Record(name="sys", text="x"))
    store.set_drain("r1", "drained")
    assert store.delete_tier1("sys") is True
    assert store.delete_tier1("sys") is False
    store.set_drain("r1", None)
    state = store.load()
    assert state.tier1 == {}
    assert state.drains == {}


def test_removing_a_replica_forgets_its_drain_and_readding_unremoves_it(store: StateStore) -> None:
    store.put_replica(ReplicaRecord(name="r5", url="http://127.0.0.1:5"))
    store.set_drain("r5", "draining")
    store.remove_replica("r5")
    state = store.load()
    assert "r5" not in state.replicas and "r5" not in state.drains and "r5" in state.removed
    store.put_replica(ReplicaRecord(name="r5", url="http://127.0.0.1:5"))
    assert "r5" not in store.load().removed


def test_bad_drain_state_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="drain state"):
        store.set_drain("r1", "sleeping")


def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SqliteStateStore(path)
    first.put_tier1(Tier1Record(name="tools", text="tool defs", source="config"))
    first.close()
    assert SqliteStateStore(path).load().tier1["tools"].source == "config"


def test_sqlite_write_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = (
        "import os, signal\n"
        "from pcache.state import SqliteStateStore, Tier1Record\n"
        f"s = SqliteStateStore({str(path)!r})\n"
        "s.put_tier1(Tier1Record(name='pinned', text='t', replicas=('r2',)))\n"
        "s.set_drain('r1', 'draining')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == -9
    state = SqliteStateStore(path).load()
    assert state.tier1["pinned"].replicas == ("r2",)
    assert state.drains == {"r1": "draining"}


def test_concurrent_writers_leave_consistent_state(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")

    def writer(worker: int) -> None:
        for i in range(50):
            store.put_tier1(Tier1Record(name=f"p{worker}-{i}", text="x"))
            if i % 2:
                store.delete_tier1(f"p{worker}-{i}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = set(store.load().tier1)
    assert names == {f"p{w}-{i}" for w in range(4) for i in range(0, 50, 2)}


def test_open_store_understands_locations(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStateStore)
    assert isinstance(open_store(f"sqlite://{tmp_path / 'a.db'}"), SqliteStateStore)
    assert isinstance(open_store(str(tmp_path / "b.db")), SqliteStateStore)


def test_unopenable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="cannot open state store"):
        SqliteStateStore(blocker / "state.db")
