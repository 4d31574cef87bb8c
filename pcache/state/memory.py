"""Operator state in memory: lost on restart. For tests and throwaway routers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from dataclasses import replace

from pcache.state.model import (
    OperatorState,
    ReplicaRecord,
    RouterRecord,
    Tier1Record,
    check_drain_state,
    keeps_one_routable,
    last_routable_error,
)

__all__ = ["MemoryStateStore"]


class MemoryStateStore:
    """Operator state in memory (one process, one event loop: every write is trivially atomic)."""

    location = "memory://"
    shared = False

    def __init__(self) -> None:
        self._state = OperatorState()
        self._version = 0
        self._routers: dict[str, RouterRecord] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (holder, expires at, monotonic)

    async def load(self) -> OperatorState:
        return self._state

    async def version(self) -> int:
        return self._version

    async def wait_change(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)  # nobody else writes here

    def _set(self, state: OperatorState) -> None:
        self._state = state
        self._version += 1

    async def put_tier1(self, record: Tier1Record) -> None:
        self._set(replace(self._state, tier1={**self._state.tier1, record.name: record}))

    async def delete_tier1(self, name: str) -> bool:
        if name not in self._state.tier1:
            return False
        self._set(replace(self._state, tier1={k: v for k, v in self._state.tier1.items() if k != name}))
        return True

    async def set_drain(
        self, replica: str, state: str | None, *, keep_routable: Collection[str] = ()
    ) -> None:
        check_drain_state(state)
        if state is not None and not keeps_one_routable(self._state, keep_routable):
            raise last_routable_error(replica, "draining")
        drains = {k: v for k, v in self._state.drains.items() if k != replica}
        if state is not None:
            drains[replica] = state
        self._set(replace(self._state, drains=drains))

    async def put_replica(self, record: ReplicaRecord) -> None:
        self._set(
            replace(
                self._state,
                replicas={**self._state.replicas, record.name: record},
                removed=self._state.removed - {record.name},
            )
        )

    async def remove_replica(self, name: str, *, keep_routable: Collection[str] = ()) -> None:
        if not keeps_one_routable(self._state, keep_routable):
            raise last_routable_error(name, "removing")
        self._set(
            replace(
                self._state,
                replicas={k: v for k, v in self._state.replicas.items() if k != name},
                drains={k: v for k, v in self._state.drains.items() if k != name},
                removed=self._state.removed | {name},
            )
        )

    async def heartbeat(self, record: RouterRecord, forget_after_s: float) -> None:
        self._routers[record.id] = record
        cutoff = record.heartbeat_at - forget_after_s
        self._routers = {k: v for k, v in self._routers.items() if v.heartbeat_at >= cutoff}

    async def routers(self) -> list[RouterRecord]:
        return [self._routers[k] for k in sorted(self._routers)]

    async def leave(self, router_id: str) -> None:
        self._routers.pop(router_id, None)

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = time.monotonic()
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._leases[name] = (holder, now + ttl_s)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        if self._leases.get(name, ("", 0.0))[0] == holder:
            del self._leases[name]

    async def publish_homes(self, origin: str, homes: Sequence[tuple[str, str]]) -> None:
        return None  # one router: nobody to tell

    async def next_homes(self, timeout_s: float) -> list[tuple[str, str, str]]:
        await asyncio.sleep(timeout_s)
        return []

    async def close(self) -> None:
        return None
