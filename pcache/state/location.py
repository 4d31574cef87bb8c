"""Which store a ``state:`` location names, and starting over on purpose (``--reset-state``).

Locations: a file path or ``sqlite:///path`` (the embedded default), ``memory://`` (lost on
restart), ``redis://host:port/db`` / ``rediss://`` / ``valkey://`` / ``valkeys://`` (shared by many
routers; ``?prefix=NAME`` keeps several fleets apart on one server). Any other ``scheme://`` is an
error: it is never taken for a file name.
"""

from __future__ import annotations

from pcache.state.memory import MemoryStateStore
from pcache.state.model import StateError, StateStore
from pcache.state.sqlite import SqliteStateStore, reset_sqlite

__all__ = ["REDIS_SCHEMES", "check_location", "open_store", "reset_store"]

REDIS_SCHEMES = ("redis", "rediss", "valkey", "valkeys")
_MEMORY = ("memory://", ":memory:")


def check_location(location: str) -> str:
    """``location`` if its scheme is known; otherwise a ``ValueError`` naming the choices."""
    if not location.strip():
        raise ValueError("empty state location")
    if location in _MEMORY or "://" not in location:
        return location
    scheme = location.split("://", 1)[0].lower()
    if scheme == "sqlite" or scheme in REDIS_SCHEMES:
        return location
    raise ValueError(
        f"unknown state scheme {scheme!r} in {location!r}: use a file path, sqlite:///path, memory:// "
        "or redis://host:port/db"
    )


def _redis_url(location: str) -> str:
    scheme, rest = location.split("://", 1)
    return ("rediss" if scheme.lower() in ("rediss", "valkeys") else "redis") + "://" + rest


def _is_redis(location: str) -> bool:
    return "://" in location and location.split("://", 1)[0].lower() in REDIS_SCHEMES


def open_store(location: str) -> StateStore:
    """The store named by ``location`` (a shared store connects on its first call)."""
    try:
        check_location(location)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    if location in _MEMORY:
        return MemoryStateStore()
    if _is_redis(location):
        from pcache.state.redis_store import RedisStateStore  # only routers on Redis load the client

        return RedisStateStore(_redis_url(location))
    return SqliteStateStore(location.removeprefix("sqlite://"))


async def reset_store(location: str) -> str:
    """Start over: move a state file aside, or delete a shared store's keys. Says what was done."""
    check_location(location)
    if location in _MEMORY:
        return "memory state starts empty anyway"
    if _is_redis(location):
        from pcache.state.redis_store import RedisStateStore

        store = RedisStateStore(_redis_url(location))
        try:
            deleted = await store.reset()
        finally:
            await store.close()
        return f"state reset: deleted {deleted} keys of prefix {store.prefix!r} in {store.location}"
    aside = reset_sqlite(location.removeprefix("sqlite://"))
    if aside is None:
        return "state reset: there was no state file"
    return f"state reset: the old state file was moved to {aside}"
