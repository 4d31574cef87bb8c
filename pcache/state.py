"""Durable operator state: Tier-1 registry and pins, drains, replicas added or removed at run time.

Everything an operator decided must survive a router restart (even SIGKILL), so every write is
committed before the call returns. :class:`StateStore` is the interface; :class:`SqliteStateStore`
(stdlib sqlite3, WAL) is the local default and :class:`MemoryStateStore` serves tests and
throwaway routers. A shared store (Redis) for many routers is another implementation of the same
protocol.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

__all__ = [
    "MemoryStateStore",
    "OperatorState",
    "ReplicaRecord",
    "SqliteStateStore",
    "StateError",
    "StateStore",
    "Tier1Record",
    "open_store",
]

DRAIN_STATES = ("draining", "drained")


class StateError(Exception):
    """The state store could not be opened or written."""


@dataclass(frozen=True)
class Tier1Record:
    """A Tier-1 prefix as the operator defined it (``source`` is ``config``, ``pin`` or ``auto``)."""

    name: str
    text: str
    as_: str = "chat"
    copies: int = 1
    replicas: tuple[str, ...] = ()
    group: str | None = None
    source: str = "pin"


@dataclass(frozen=True)
class ReplicaRecord:
    """A replica added at run time."""

    name: str
    url: str
    engine: str = "auto"
    group: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class OperatorState:
    tier1: dict[str, Tier1Record] = field(default_factory=dict)
    drains: dict[str, str] = field(default_factory=dict)  # replica -> "draining" | "drained"
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()


class StateStore(Protocol):
    """Where operator decisions live. Every method is atomic and durable when it returns."""

    def load(self) -> OperatorState: ...

    def put_tier1(self, record: Tier1Record) -> None: ...

    def delete_tier1(self, name: str) -> bool: ...

    def set_drain(self, replica: str, state: str | None) -> None: ...

    def put_replica(self, record: ReplicaRecord) -> None: ...

    def remove_replica(self, name: str) -> None: ...

    def close(self) -> None: ...


def _check_drain_state(state: str | None) -> None:
    if state is not None and state not in DRAIN_STATES:
        raise ValueError(f"drain state must be one of {DRAIN_STATES} or None, not {state!r}")


class MemoryStateStore:
    """Operator state in memory: lost on restart. For tests and throwaway routers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = OperatorState()

    def load(self) -> OperatorState:
        with self._lock:
            return self._state

    def put_tier1(self, record: Tier1Record) -> None:
        with self._lock:
            self._state = replace(self._state, tier1={**self._state.tier1, record.name: record})

    def delete_tier1(self, name: str) -> bool:
        with self._lock:
            if name not in self._state.tier1:
                return False
            tier1 = {k: v for k, v in self._state.tier1.items() if k != name}
            self._state = replace(self._state, tier1=tier1)
            return True

    def set_drain(self, replica: str, state: str | None) -> None:
        _check_drain_state(state)
        with self._lock:
            drains = {k: v for k, v in self._state.drains.items() if k != replica}
            if state is not None:
                drains[replica] = state
            self._state = replace(self._state, drains=drains)

    def put_replica(self, record: ReplicaRecord) -> None:
        with self._lock:
            self._state = replace(
                self._state,
                replicas={**self._state.replicas, record.name: record},
                removed=self._state.removed - {record.name},
            )

    def remove_replica(self, name: str) -> None:
        with self._lock:
            self._state = replace(
                self._state,
                replicas={k: v for k, v in self._state.replicas.items() if k != name},
                drains={k: v for k, v in self._state.drains.items() if k != name},
                removed=self._state.removed | {name},
            )

    def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tier1 (
    name TEXT PRIMARY KEY, text TEXT NOT NULL, as_ TEXT NOT NULL, copies INTEGER NOT NULL,
    replicas TEXT NOT NULL, grp TEXT, source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drains (replica TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY, url TEXT NOT NULL, engine TEXT NOT NULL, grp TEXT, weight REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS removed (name TEXT PRIMARY KEY);
"""


class SqliteStateStore:
    """Operator state in a local sqlite file (WAL; each write committed before returning)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state store {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except (sqlite3.Error, ValueError) as exc:  # ValueError: e.g. a str sqlite cannot encode
                if self._db.in_transaction:  # never leave the connection inside a failed write
                    self._db.execute("ROLLBACK")
                raise StateError(f"cannot write state store {self.path}: {exc}") from exc

    def load(self) -> OperatorState:
        with self._lock:
            tier1 = {
                row[0]: Tier1Record(
                    name=row[0],
                    text=row[1],
                    as_=row[2],
                    copies=row[3],
                    replicas=tuple(json.loads(row[4])),
                    group=row[5],
                    source=row[6],
                )
                for row in self._db.execute(
                    "SELECT name, text, as_, copies, replicas, grp, source FROM tier1 ORDER BY name"
                )
            }
            drains = dict(self._db.execute("SELECT replica, state FROM drains ORDER BY replica").fetchall())
            replicas = {
                row[0]: ReplicaRecord(name=row[0], url=row[1], engine=row[2], group=row[3], weight=row[4])
                for row in self._db.execute(
                    "SELECT name, url, engine, grp, weight FROM replicas ORDER BY name"
                )
            }
            removed = frozenset(row[0] for row in self._db.execute("SELECT name FROM removed"))
        return OperatorState(tier1=tier1, drains=drains, replicas=replicas, removed=removed)

    def put_tier1(self, record: Tier1Record) -> None:
        self._write(
            (
                "INSERT OR REPLACE INTO tier1 (name, text, as_, copies, replicas, grp, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.text,
                    record.as_,
                    record.copies,
                    json.dumps(list(record.replicas)),
                    record.group,
                    record.source,
                ),
            )
        )

    def delete_tier1(self, name: str) -> bool:
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM tier1 WHERE name = ?", (name,)).fetchone()
        if not exists:
            return False
        self._write(("DELETE FROM tier1 WHERE name = ?", (name,)))
        return True

    def set_drain(self, replica: str, state: str | None) -> None:
        _check_drain_state(state)
        if state is None:
            self._write(("DELETE FROM drains WHERE replica = ?", (replica,)))
        else:
            self._write(("INSERT OR REPLACE INTO drains (replica, state) VALUES (?, ?)", (replica, state)))

    def put_replica(self, record: ReplicaRecord) -> None:
        self._write(
            (
                "INSERT OR REPLACE INTO replicas (name, url, engine, grp, weight) VALUES (?, ?, ?, ?, ?)",
                (record.name, record.url, record.engine, record.group, record.weight),
            ),
            ("DELETE FROM removed WHERE name = ?", (record.name,)),
        )

    def remove_replica(self, name: str) -> None:
        self._write(
            ("DELETE FROM replicas WHERE name = ?", (name,)),
            ("DELETE FROM drains WHERE replica = ?", (name,)),
            ("INSERT OR IGNORE INTO removed (name) VALUES (?)", (name,)),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(location: str) -> StateStore:
    """Open the store named by ``location``: ``memory://``, ``sqlite:///path`` or a plain path."""
    if location in ("memory://", ":memory:"):
        return MemoryStateStore()
    if location.startswith("sqlite://"):
        location = location.removeprefix("sqlite://")
    if not location:
        raise StateError("empty state location")
    return SqliteStateStore(location)
