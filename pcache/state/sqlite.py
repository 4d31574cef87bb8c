"""Operator state in a local sqlite file: the embedded default for one router (or one machine's
workers, which share the file).

Every call runs on one thread of the store's own, so a write that waits for the file lock (another
process holding it) or for a slow disk never blocks the router's event loop. A write commits before
its coroutine returns (WAL, ``synchronous=NORMAL``: a committed write survives SIGKILL). Failures
become :class:`StateError` with the status an operator can act on: 503 with a retry hint while the
file is locked, 507 when the disk is full. A state file that exists but is empty (truncated) or
corrupt is refused when the store opens, naming the file: taking it as empty would silently forget
every pin, drain and removal. :func:`reset_sqlite` moves such a file aside on purpose.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pcache.state.model import (
    OperatorState,
    ReplicaRecord,
    RouterRecord,
    StateError,
    Tier1Record,
    check_drain_state,
    keeps_one_routable,
    last_routable_error,
    router_from_json,
    router_to_json,
)

__all__ = ["SqliteStateStore", "reset_sqlite"]

T = TypeVar("T")

_LOCK_WAIT_S = 2.0  # how long a write waits for another process's lock before answering 503

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS routers (id TEXT PRIMARY KEY, heartbeat_at REAL NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
"""

_RESET_HINT = "restore it from a backup, or pass --reset-state to start over without it"

# sqlite primary result codes (the low byte of an extended code)
_SQLITE_READONLY, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL = 8, 5, 6, 10, 13


def _open_checked(path: Path) -> sqlite3.Connection:
    """Connect to ``path``, refusing a file that exists but is empty or is not a sound database."""
    if path.is_file() and path.stat().st_size == 0:
        raise StateError(
            f"state file {path} is empty (0 bytes: truncated?); refusing to start without its pins, "
            f"drains and removals: {_RESET_HINT}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=_LOCK_WAIT_S)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open state store {path}: {exc}") from exc
    try:
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            detail = "; ".join(str(row[0]) for row in check[:3])
            raise StateError(f"state file {path} is corrupt ({detail}): {_RESET_HINT}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(replicas)")}
        if "joining" not in columns:  # a state file from before replicas could be joining
            db.execute("ALTER TABLE replicas ADD COLUMN joining INTEGER NOT NULL DEFAULT 0")
    except sqlite3.DatabaseError as exc:
        db.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise StateError(f"cannot open state store {path}: {exc}") from exc
        raise StateError(f"state file {path} is not a readable state store ({exc}): {_RESET_HINT}") from exc
    except StateError:
        db.close()
        raise
    return db


def reset_sqlite(path: str | Path) -> Path | None:
    """Move the state file (and its WAL) aside so the router starts over; return where it went."""
    path = Path(path)
    if not path.exists():
        return None
    aside = path.with_name(f"{path.name}.reset-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside


class SqliteStateStore:
    """Operator state in a local sqlite file; every call runs on the store's own thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.shared = False  # other workers of this machine may write it (see version())
        self._db = _open_checked(self.path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcache-state")

    # ---- plumbing -------------------------------------------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    def _error(self, exc: Exception) -> StateError:
        """The operator-facing error of a failed call (never a bare 500)."""
        where = f"state store {self.path}"
        if isinstance(exc, ValueError):  # e.g. a str sqlite cannot encode
            return StateError(f"cannot write {where}: {exc}", status=422, code="invalid_state_value")
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return StateError(f"cannot write {where}: disk full", status=507, code="state_disk_full")
        primary = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StateError(
                f"{where} is locked by another process (waited {_LOCK_WAIT_S:g}s); nothing was changed, "
                "retry shortly",
                status=503,
                code="state_locked",
                retry_after=1,
            )
        if primary == _SQLITE_FULL:
            return StateError(f"cannot write {where}: disk full ({exc})", status=507, code="state_disk_full")
        if primary == _SQLITE_READONLY:
            return StateError(f"cannot write {where}: read-only ({exc})", status=503, code="state_read_only")
        return StateError(f"cannot write {where}: {exc}", status=503, code="state_write_failed")

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one immediate transaction that also bumps the version; on the thread."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            result = body(db)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('version', 1) "
                "ON CONFLICT(key) DO UPDATE SET value = value + 1"
            )
            db.execute("COMMIT")
            return result
        except (sqlite3.Error, ValueError, OSError) as exc:
            error = self._error(exc)
        except StateError:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if db.in_transaction:  # never leave the connection inside a failed write
            db.execute("ROLLBACK")
        raise error

    async def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(lambda: self._transaction(body))

    # ---- reading --------------------------------------------------------------------------------

    def _load_sync(self) -> OperatorState:
        return _read_state(self._db)

    async def load(self) -> OperatorState:
        try:
            return await self._run(self._load_sync)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def version(self) -> int:
        def read() -> int:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            return int(row[0]) if row else 0

        try:
            return await self._run(read)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def wait_change(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)  # other workers on this file are seen by polling version()

    # ---- writing --------------------------------------------------------------------------------

    async def put_tier1(self, record: Tier1Record) -> None:
        row = (
            record.name,
            record.text,
            record.as_,
            record.copies,
            json.dumps(list(record.replicas)),
            record.group,
            record.source,
        )
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO tier1 (name, text, as_, copies, replicas, grp, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def delete_tier1(self, name: str) -> bool:
        return await self._write(
            lambda db: db.execute("DELETE FROM tier1 WHERE name = ?", (name,)).rowcount > 0
        )

    async def set_drain(
        self, replica: str, state: str | None, *, keep_routable: Collection[str] = ()
    ) -> None:
        check_drain_state(state)

        def write(db: sqlite3.Connection) -> None:
            if state is None:
                db.execute("DELETE FROM drains WHERE replica = ?", (replica,))
                return
            if not keeps_one_routable(_read_state(db), keep_routable):
                raise last_routable_error(replica, "draining")
            db.execute("INSERT OR REPLACE INTO drains (replica, state) VALUES (?, ?)", (replica, state))

        await self._write(write)

    async def put_replica(self, record: ReplicaRecord) -> None:
        row = (record.name, record.url, record.engine, record.group, record.weight, int(record.joining))

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO replicas (name, url, engine, grp, weight, joining) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            db.execute("DELETE FROM removed WHERE name = ?", (record.name,))

        await self._write(write)

    async def remove_replica(self, name: str, *, keep_routable: Collection[str] = ()) -> None:
        def write(db: sqlite3.Connection) -> None:
            if not keeps_one_routable(_read_state(db), keep_routable):
                raise last_routable_error(name, "removing")
            db.execute("DELETE FROM replicas WHERE name = ?", (name,))
            db.execute("DELETE FROM drains WHERE replica = ?", (name,))
            db.execute("INSERT OR IGNORE INTO removed (name) VALUES (?)", (name,))

        await self._write(write)

    # ---- membership (workers of one machine sharing the file) -----------------------------------

    async def _plain(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One statement outside the versioned transactions (membership is not operator state)."""

        def run() -> list[tuple[object, ...]]:
            return list(self._db.execute(sql, params).fetchall())

        try:
            return await self._run(run)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def heartbeat(self, record: RouterRecord, forget_after_s: float) -> None:
        await self._plain(
            "INSERT OR REPLACE INTO routers (id, heartbeat_at, record) VALUES (?, ?, ?)",
            (record.id, record.heartbeat_at, router_to_json(record)),
        )
        await self._plain(
            "DELETE FROM routers WHERE heartbeat_at < ?", (record.heartbeat_at - forget_after_s,)
        )

    async def routers(self) -> list[RouterRecord]:
        rows = await self._plain("SELECT record FROM routers ORDER BY id")
        records = (router_from_json(str(row[0])) for row in rows)
        return [r for r in records if r is not None]

    async def leave(self, router_id: str) -> None:
        await self._plain("DELETE FROM routers WHERE id = ?", (router_id,))

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        def take() -> bool:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = db.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
                if row is not None and row[0] != holder and row[1] > now:
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO leases (name, holder, expires_at) VALUES (?, ?, ?)",
                    (name, holder, now + ttl_s),
                )
                return True
            finally:
                db.execute("COMMIT")

        try:
            return await self._run(take)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def release_lease(self, name: str, holder: str) -> None:
        await self._plain("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    async def publish_homes(self, origin: str, homes: Sequence[tuple[str, str]]) -> None:
        return None  # workers on one file keep their own homes (HRW sends a session to one place)

    async def next_homes(self, timeout_s: float) -> list[tuple[str, str, str]]:
        await asyncio.sleep(timeout_s)
        return []

    async def close(self) -> None:
        await self._run(self._db.close)
        self._thread.shutdown(wait=True)


def _read_state(db: sqlite3.Connection) -> OperatorState:
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
        for row in db.execute(
            "SELECT name, text, as_, copies, replicas, grp, source FROM tier1 ORDER BY name"
        )
    }
    drains = dict(db.execute("SELECT replica, state FROM drains ORDER BY replica").fetchall())
    replicas = {
        row[0]: ReplicaRecord(
            name=row[0], url=row[1], engine=row[2], group=row[3], weight=row[4], joining=bool(row[5])
        )
        for row in db.execute("SELECT name, url, engine, grp, weight, joining FROM replicas ORDER BY name")
    }
    removed = frozenset(row[0] for row in db.execute("SELECT name FROM removed"))
    return OperatorState(tier1=tier1, drains=drains, replicas=replicas, removed=removed)
