"""Durable operator state: Tier-1 registry and pins, drains, replicas added or removed at run time.

Everything an operator decided must survive a router restart (even SIGKILL), so every write is
committed before its coroutine returns. :class:`StateStore` is the (async) interface;
:class:`SqliteStateStore` is the embedded default for one router, :class:`RedisStateStore`
(``state: redis://...``) is shared by many routers, :class:`MemoryStateStore` serves tests and
throwaway routers. :func:`open_store` picks one from a ``state:`` location.
"""

from pcache.state.location import REDIS_SCHEMES, check_location, open_store, reset_store
from pcache.state.memory import MemoryStateStore
from pcache.state.model import (
    DRAIN_STATES,
    OperatorState,
    ReplicaRecord,
    StateError,
    StateStore,
    Tier1Record,
)
from pcache.state.sqlite import SqliteStateStore, reset_sqlite

__all__ = [
    "DRAIN_STATES",
    "REDIS_SCHEMES",
    "MemoryStateStore",
    "OperatorState",
    "ReplicaRecord",
    "SqliteStateStore",
    "StateError",
    "StateStore",
    "Tier1Record",
    "check_location",
    "open_store",
    "reset_sqlite",
    "reset_store",
]
