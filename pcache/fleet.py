"""The live fleet: membership, health, load, engine stats and the operator state machine.

:class:`Fleet` keeps one mutable :class:`ReplicaEntry` per replica and hands policies an immutable
:class:`~pcache.fleet_view.FleetView`, rebuilt lazily after anything that routing reads has changed
(so the hot path reads a cached object; a load change rebuilds only that replica's view). A
replica's state combines the operator's decision (active, draining, drained) with its health
(checks and passive failures)::

    removed  >  drained  >  draining  >  unhealthy  >  healthy

A draining replica becomes drained when nothing is in flight through it; ``on_drained`` is called
so the operator state can be persisted. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pcache.engines.base import ReplicaStats
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView, Tier1Prefix

__all__ = ["Fleet", "ReplicaEntry", "UnknownReplica"]

_HIT_WINDOW_S = 60.0  # recent window for a replica's engine-reported hit rate


class UnknownReplica(KeyError):
    """No replica of that name is in the fleet."""


@dataclass(slots=True)
class ReplicaEntry:
    """One replica's mutable record. Only :class:`Fleet` writes it."""

    name: str
    url: str
    engine: str = "auto"
    group: str | None = None
    weight: float = 1.0
    source: str = "config"  # config | runtime
    healthy: bool = True
    drain: str | None = None  # None | "draining" | "drained"
    joining: bool = False  # added at run time, not routable until its Tier-1 share is prewarmed
    in_flight: int = 0
    pending_tokens: int = 0  # predicted uncached prompt tokens of requests not yet past prefill
    failures: int = 0  # consecutive failed checks / proxied requests
    successes: int = 0  # consecutive good checks while unhealthy
    stats: ReplicaStats | None = None
    scraped_at: float | None = None  # time.time() of the last successful scrape
    last_error: str | None = None
    detected_engine: str | None = None
    hit_samples: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t, queries, hits)

    @property
    def state(self) -> ReplicaState:
        if self.drain == "drained":
            return ReplicaState.DRAINED
        if self.drain == "draining":
            return ReplicaState.DRAINING
        if self.joining:
            return ReplicaState.JOINING
        return ReplicaState.HEALTHY if self.healthy else ReplicaState.UNHEALTHY

    @property
    def load(self) -> int:
        """In flight through this router plus the engine's waiting queue."""
        waiting = self.stats.waiting if self.stats is not None and self.stats.waiting else 0
        return self.in_flight + waiting

    def hit_rate(self, now: float) -> float | None:
        """Engine prefix-cache hits / queries over the recent window (tokens)."""
        queries = hits = 0.0
        for t, q, h in self.hit_samples:
            if now - t <= _HIT_WINDOW_S:
                queries += q
                hits += h
        return hits / queries if queries else None


class Fleet:
    """Replicas in a stable order plus the Tier-1 registry; the source of every FleetView."""

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        recovery_threshold: int = 2,
        on_drained: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_threshold = recovery_threshold
        self._on_drained = on_drained
        self._clock = clock
        self._entries: dict[str, ReplicaEntry] = {}
        self._tier1: dict[str, Tier1Prefix] = {}
        self._view: FleetView | None = None
        self._replica_views: dict[str, ReplicaView] = {}  # reused by view() until the replica changes
        self.version = 0  # bumped on every membership/state/tier1 change (not on load changes)

    # ---- reading --------------------------------------------------------------------------------

    def view(self) -> FleetView:
        """The current immutable view (cached until something routing reads changes)."""
        view = self._view
        if view is None:
            views = self._replica_views
            replicas = tuple(views.get(e.name) or self._replica_view(e) for e in self._entries.values())
            view = self._view = FleetView(replicas=replicas, tier1=dict(self._tier1))
        return view

    def _replica_view(self, e: ReplicaEntry) -> ReplicaView:
        view = self._replica_views[e.name] = ReplicaView(
            name=e.name,
            state=e.state,
            load=e.load,
            weight=e.weight,
            group=e.group,
            kv_usage=e.stats.kv_usage if e.stats is not None else None,
            cache_capacity_tokens=_capacity(e.stats),
            pending_tokens=e.pending_tokens,
        )
        return view

    def entries(self) -> list[ReplicaEntry]:
        return list(self._entries.values())

    def get(self, name: str) -> ReplicaEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownReplica(name)
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def url(self, name: str) -> str:
        return self.get(name).url

    @property
    def tier1(self) -> Mapping[str, Tier1Prefix]:
        return self._tier1

    def routable_names(self) -> list[str]:
        return [e.name for e in self._entries.values() if e.state is ReplicaState.HEALTHY]

    # ---- membership and operator state ----------------------------------------------------------

    def _changed(self) -> None:
        self._view = None
        self._replica_views.clear()
        self.version += 1

    def _load_changed(self, name: str) -> None:
        """Only ``name``'s load or stats changed: the next view rebuilds just its ReplicaView."""
        self._view = None
        self._replica_views.pop(name, None)

    def add(
        self,
        name: str,
        url: str,
        *,
        engine: str = "auto",
        group: str | None = None,
        weight: float = 1.0,
        source: str = "config",
        drain: str | None = None,
        joining: bool = False,
    ) -> ReplicaEntry:
        if name in self._entries:
            raise ValueError(f"replica {name!r} already exists")
        entry = ReplicaEntry(
            name=name, url=url.rstrip("/"), engine=engine, group=group, weight=weight, source=source
        )
        entry.drain = drain
        if joining:
            entry.joining, entry.healthy = True, False
        self._entries[name] = entry
        self._changed()
        return entry

    def remove(self, name: str) -> ReplicaEntry:
        entry = self._entries.pop(name, None)
        if entry is None:
            raise UnknownReplica(name)
        self._changed()
        return entry

    def set_drain(self, name: str, drain: str | None) -> None:
        """Set the operator state; ``draining`` with nothing in flight goes straight to ``drained``."""
        entry = self.get(name)
        if drain == "draining" and entry.in_flight == 0:
            drain = "drained"
        entry.drain = drain
        self._changed()

    def set_tier1(self, prefixes: Iterable[Tier1Prefix]) -> None:
        self._tier1 = {p.name: p for p in prefixes}
        self._changed()

    def put_tier1(self, prefix: Tier1Prefix) -> None:
        self._tier1 = {**self._tier1, prefix.name: prefix}
        self._changed()

    def delete_tier1(self, name: str) -> Tier1Prefix | None:
        prefix = self._tier1.get(name)
        if prefix is not None:
            self._tier1 = {k: v for k, v in self._tier1.items() if k != name}
            self._changed()
        return prefix

    # ---- traffic --------------------------------------------------------------------------------

    def begin(self, name: str, prefill_tokens: int = 0) -> None:
        """A proxied request to ``name`` started, with ``prefill_tokens`` still to prefill there."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.in_flight += 1
            entry.pending_tokens += prefill_tokens
            self._load_changed(name)

    def prefilled(self, name: str, prefill_tokens: int) -> None:
        """``prefill_tokens`` announced by :meth:`begin` are done (first byte seen, or gave up)."""
        entry = self._entries.get(name)
        if entry is not None and prefill_tokens:
            entry.pending_tokens = max(0, entry.pending_tokens - prefill_tokens)
            self._load_changed(name)

    def end(self, name: str) -> None:
        """A proxied request to ``name`` finished (either way)."""
        entry = self._entries.get(name)
        if entry is None:
            return
        entry.in_flight = max(0, entry.in_flight - 1)
        self._load_changed(name)
        if entry.drain == "draining" and entry.in_flight == 0:
            entry.drain = "drained"
            self._changed()
            if self._on_drained is not None:
                self._on_drained(name)

    # ---- health ---------------------------------------------------------------------------------

    def report_failure(self, name: str, error: str) -> bool:
        """A failed health check or proxied request. True when the replica just became unhealthy."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        entry.last_error = error
        entry.failures += 1
        entry.successes = 0
        if entry.healthy and entry.failures >= self.failure_threshold:
            entry.healthy = False
            self._changed()
            return True
        return False

    def report_success(self, name: str) -> bool:
        """A good health check or proxied request. True when the replica just became healthy again."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        entry.failures = 0
        if entry.healthy or entry.joining:
            return False
        entry.successes += 1
        if entry.successes >= self.recovery_threshold:
            entry.healthy = True
            entry.successes = 0
            entry.last_error = None
            self._changed()
            return True
        return False

    def finish_joining(self, name: str, *, routable: bool) -> None:
        """End a run-time replica's joining phase: routable now (checked and prewarmed), or left to
        the health checks' recovery threshold (its first check failed)."""
        entry = self.get(name)
        entry.joining = False
        if routable:
            entry.healthy, entry.failures, entry.successes, entry.last_error = True, 0, 0, None
        self._changed()

    def apply_stats(self, name: str, stats: ReplicaStats, queries_delta: float, hits_delta: float) -> None:
        """Record one successful scrape of ``name``."""
        entry = self._entries.get(name)
        if entry is None:
            return
        now = self._clock()
        entry.stats = stats
        entry.scraped_at = now
        entry.detected_engine = stats.engine
        entry.hit_samples.append((now, queries_delta, hits_delta))
        while entry.hit_samples and now - entry.hit_samples[0][0] > _HIT_WINDOW_S:
            entry.hit_samples.popleft()
        self._load_changed(name)

    def scrape_failed(self, name: str, error: str) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            entry.last_error = error


def _capacity(stats: ReplicaStats | None) -> int | None:
    if stats is None or stats.block_size is None or stats.num_blocks is None:
        return None
    return stats.block_size * stats.num_blocks
