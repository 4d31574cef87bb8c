"""The operator state's records, the :class:`StateStore` interface and its error.

The interface is async so that no router blocks its event loop on the store: the sqlite store runs
its writes on a thread of its own, the Redis store is a network client. Every write is atomic and
durable (or, for a shared store, visible to every router) when its coroutine returns; a write that
could not be made raises :class:`StateError` and changed nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

__all__ = [
    "DRAIN_STATES",
    "OperatorState",
    "ReplicaRecord",
    "RouterRecord",
    "StateError",
    "StateStore",
    "Tier1Record",
    "check_drain_state",
    "keeps_one_routable",
    "router_from_json",
    "router_to_json",
]

DRAIN_STATES = ("draining", "drained")


class StateError(Exception):
    """The state store could not be opened, read or written; nothing was changed.

    ``status`` and ``code`` are what the admin API answers with (503 while the store is locked or
    unreachable, 507 when its disk is full, 409 when a guarded write was refused); ``retry_after``
    (seconds) becomes a ``Retry-After`` header when the condition is expected to pass.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 503,
        code: str = "state_unavailable",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True)
class Tier1Record:
    """A Tier-1 prefix as the operator defined it (``source`` is ``config``, ``pin``, ``auto``, or
    ``prewarm``: registered by a prewarm without ``pin`` so traffic follows the warmed owners)."""

    name: str
    text: str
    as_: str = "chat"
    copies: int = 1
    replicas: tuple[str, ...] = ()
    group: str | None = None
    source: str = "pin"


@dataclass(frozen=True)
class ReplicaRecord:
    """A replica added at run time. ``joining`` while the router adding it prewarms its Tier-1
    share: the other routers then hold it out too, so scale-out costs no cold misses anywhere."""

    name: str
    url: str
    engine: str = "auto"
    group: str | None = None
    weight: float = 1.0
    joining: bool = False


@dataclass(frozen=True)
class RouterRecord:
    """One router's heartbeat: who it is, how busy, and its requests in flight per replica.

    Routers sharing a store publish this every heartbeat; the others list it (``pcache status``)
    and add its ``in_flight`` counts to the load they route by. Not operator state: it is never
    part of :class:`OperatorState` and never bumps the version.
    """

    id: str
    url: str
    admin_url: str
    version: str
    started_at: float
    heartbeat_at: float
    requests_per_s: float = 0.0
    in_flight: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OperatorState:
    tier1: dict[str, Tier1Record] = field(default_factory=dict)
    drains: dict[str, str] = field(default_factory=dict)  # replica -> "draining" | "drained"
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()


class StateStore(Protocol):
    """Where operator decisions live. Every write is atomic and durable when it returns.

    ``keep_routable`` guards a drain or a removal against a race between routers (or two admin calls
    on one router): the write is made only if at least one of the named replicas is neither drained,
    draining nor removed in the store at that moment, checked and written in one transaction;
    otherwise :class:`StateError` with status 409 and code ``last_routable``. Empty: no guard.
    """

    location: str  # for messages and status, without credentials
    shared: bool  # whether other routers may write it too

    async def load(self) -> OperatorState: ...

    async def version(self) -> int:
        """A number that changes on every write by any router: a cheap "has anything changed"."""
        ...

    async def wait_change(self, timeout_s: float) -> None:
        """Return when another writer may have changed the state, or after ``timeout_s``."""
        ...

    async def put_tier1(self, record: Tier1Record) -> None: ...

    async def delete_tier1(self, name: str) -> bool: ...

    async def set_drain(
        self, replica: str, state: str | None, *, keep_routable: Collection[str] = ()
    ) -> None: ...

    async def put_replica(self, record: ReplicaRecord) -> None: ...

    async def remove_replica(self, name: str, *, keep_routable: Collection[str] = ()) -> None: ...

    async def heartbeat(self, record: RouterRecord, forget_after_s: float) -> None:
        """Publish this router's record; drop records silent for ``forget_after_s``."""
        ...

    async def routers(self) -> list[RouterRecord]:
        """Every router's latest record (this one's included), by id."""
        ...

    async def leave(self, router_id: str) -> None:
        """Remove a router's record (a clean shutdown)."""
        ...

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` (atomic); False while another holds it.

        A lease makes a background job run on one router at a time; a holder that stops renewing
        (it died) loses the lease after ``ttl_s`` and another router takes the job over.
        """
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it."""
        ...

    async def publish_homes(self, origin: str, homes: Sequence[tuple[str, str]]) -> None:
        """Tell the other routers which sessions got which home replica (``origin``: this router)."""
        ...

    async def next_homes(self, timeout_s: float) -> list[tuple[str, str, str]]:
        """Homes other routers published since the last call, as (origin, session, replica);
        waits up to ``timeout_s`` for some. A store with one router returns none."""
        ...

    async def close(self) -> None: ...


def check_drain_state(state: str | None) -> None:
    if state is not None and state not in DRAIN_STATES:
        raise ValueError(f"drain state must be one of {DRAIN_STATES} or None, not {state!r}")


def keeps_one_routable(state: OperatorState, keep_routable: Collection[str]) -> bool:
    """Whether ``keep_routable`` is empty or names a replica the state neither drains nor removed."""
    if not keep_routable:
        return True
    return any(name not in state.drains and name not in state.removed for name in keep_routable)


def last_routable_error(replica: str, verb: str) -> StateError:
    """The refusal of a guarded write: another router drained or removed the others meanwhile."""
    return StateError(
        f"{verb} {replica} was refused: every other routable replica was drained or removed meanwhile "
        f"(possibly through another router); {verb} it would leave nothing to serve requests",
        status=409,
        code="last_routable",
    )


def router_to_json(record: RouterRecord) -> str:
    return json.dumps(asdict(record), separators=(",", ":"))


def router_from_json(raw: str) -> RouterRecord | None:
    """The record, or None when it is malformed (another version's, or damaged): never fatal."""
    try:
        fields = json.loads(raw)
        record = RouterRecord(**fields)
        in_flight = {str(k): int(v) for k, v in record.in_flight.items()}
    except (ValueError, TypeError, AttributeError):
        return None
    return replace(record, in_flight=in_flight)
