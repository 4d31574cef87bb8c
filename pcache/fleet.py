"""The live fleet: membership, health, load, engine stats and the operator state machine.

:class:`Fleet` keeps one mutable :class:`ReplicaEntry` per replica and hands policies an immutable
:class:`~pcache.fleet_view.FleetView`, rebuilt lazily after anything that routing reads has changed
(so the hot path reads a cached object; a load change rebuilds only that replica's view). A
replica's state combines the operator's decision (active, draining, drained) with its health
(checks and passive failures)::

    removed  >  drained  >  draining  >  unhealthy  >  healthy

A draining replica becomes drained when nothing is in flight through it; ``on_drained`` is called
so the operator state can be persisted. Nothing here does I/O.

**Load** is the number of requests a replica is working on or has queued: those in flight through
this router now, plus the engine's own running and waiting requests that did not come through this
router (other routers, direct clients), as of the last scrape::

    load = in_flight + max(peer_in_flight, running + waiting - in_flight_at_scrape)

``peer_in_flight`` is what the other routers sharing a state store last published as in flight
through them: fresher than the engine's gauges between scrapes, and the larger of the two is taken
so the other routers' requests are never counted twice (the engine's gauges include them).

Adding the engine's waiting count to ``in_flight`` would count the router's queued requests twice
(they are in flight through the router *and* waiting in the engine). The engine's gauges of a dead
replica (unhealthy, or its last scrape failed) are forgotten, never kept as live values.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pcache.engines.base import TIERS, ReplicaStats
from pcache.engines.histogram import Buckets
from pcache.engines.window import DEFAULT_WINDOW_S, CounterWindow, HistogramWindow
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView, Tier1Prefix

__all__ = ["Fleet", "ReplicaEntry", "UnknownReplica"]

WINDOW_S = DEFAULT_WINDOW_S  # the recent window of hit rates and latency percentiles


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
    last_error: str | None = None  # cleared when the replica answers well again
    last_error_at: float | None = None  # time.time() of last_error
    ejected_until: float = 0.0  # outlier ejection (fleet clock): checks cannot bring it back before
    detected_engine: str | None = None
    in_flight_at_scrape: int = 0  # this router's in-flight requests when ``stats`` was scraped
    peer_in_flight: int = 0  # in flight through the other routers sharing the state store
    prefix_window: CounterWindow = field(default_factory=lambda: CounterWindow(2))  # queries, hits
    tier_window: CounterWindow = field(default_factory=lambda: CounterWindow(len(TIERS)))  # hits per tier
    tiers_reported: bool = False  # whether the engine's last scrape split its hits by tier
    ttft_window: HistogramWindow = field(default_factory=HistogramWindow)
    e2e_window: HistogramWindow = field(default_factory=HistogramWindow)

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
    def external_load(self) -> int:
        """The engine's running + waiting requests that are not this router's, at the last scrape."""
        stats = self.stats
        if stats is None or (stats.running is None and stats.waiting is None):
            return 0
        engine_total = (stats.running or 0) + (stats.waiting or 0)
        return max(0, engine_total - self.in_flight_at_scrape)

    @property
    def load(self) -> int:
        """Requests in flight through this router plus everyone else's (module docstring)."""
        return self.in_flight + max(self.peer_in_flight, self.external_load)

    def prefix_totals(self, now: float) -> tuple[float, float]:
        """Engine prefix-cache ``(queries, hits)`` in tokens over the recent window."""
        queries, hits = self.prefix_window.totals(now)
        return queries, hits

    def hit_rate(self, now: float) -> float | None:
        """Engine prefix-cache hits / queries over the recent window (tokens)."""
        queries, hits = self.prefix_totals(now)
        return hits / queries if queries else None

    def tier_totals(self, now: float) -> dict[str, float] | None:
        """Cached tokens per tier (``TIERS``) over the recent window; None if the engine does not
        split its hits by tier."""
        if not self.tiers_reported:
            return None
        return dict(zip(TIERS, self.tier_window.totals(now), strict=True))

    def hit_rate_by_tier(self, now: float) -> dict[str, float] | None:
        """Each tier's share of the window's queried tokens: they sum to :meth:`hit_rate`."""
        totals = self.tier_totals(now)
        queries, _ = self.prefix_totals(now)
        if totals is None or not queries:
            return None
        return {tier: hits / queries for tier, hits in totals.items()}

    def ttft_recent(self, now: float) -> Buckets | None:
        """TTFT buckets of the requests the engine served in the recent window."""
        return self.ttft_window.buckets(now)

    def e2e_recent(self, now: float) -> Buckets | None:
        """End-to-end latency buckets of the requests the engine finished in the recent window."""
        return self.e2e_window.buckets(now)

    @property
    def gauges_live(self) -> bool:
        """Whether the engine gauges (KV usage, running, waiting) describe the replica now."""
        return self.stats is not None and (self.healthy or self.joining)


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
        self._listeners: list[Callable[[], None]] = []

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

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every membership, state or Tier-1 change (never for load)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._view = None
        self._replica_views.clear()
        self.version += 1
        for listener in self._listeners:
            listener()

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

    def set_peer_in_flight(self, counts: Mapping[str, int]) -> None:
        """The other routers' in-flight requests per replica (absent: none)."""
        for name, entry in self._entries.items():
            count = max(0, counts.get(name, 0))
            if count != entry.peer_in_flight:
                entry.peer_in_flight = count
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
        entry.last_error, entry.last_error_at = error, self._clock()
        entry.failures += 1
        entry.successes = 0
        if entry.healthy and entry.failures >= self.failure_threshold:
            entry.healthy = False
            _forget_gauges(entry)
            self._changed()
            return True
        return False

    def eject(self, name: str, seconds: float, error: str) -> None:
        """Hold ``name`` out for ``seconds`` (passive outlier detection, pcache.router.outlier): it
        is unhealthy, and good checks count towards its recovery only once the time is up."""
        entry = self.get(name)
        entry.ejected_until = self._clock() + seconds
        entry.last_error, entry.last_error_at = error, self._clock()
        entry.successes = 0
        if entry.healthy:
            entry.healthy = False
            self._changed()

    def report_success(self, name: str) -> bool:
        """A good health check or proxied request. True when the replica just became healthy again."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        entry.failures = 0
        if self._clock() < entry.ejected_until:
            return False
        if entry.healthy or entry.joining:
            if entry.healthy:
                entry.last_error = entry.last_error_at = None  # it answers well: the error is history
            return False
        entry.successes += 1
        if entry.successes >= self.recovery_threshold:
            entry.healthy = True
            entry.successes = 0
            entry.last_error = entry.last_error_at = None
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

    def apply_stats(
        self,
        name: str,
        stats: ReplicaStats,
        queries_delta: float,
        hits_delta: float,
        tier_deltas: tuple[float, ...] | None = None,
    ) -> None:
        """Record one successful scrape of ``name`` (``tier_deltas``: hits per tier, ``TIERS`` order)."""
        entry = self._entries.get(name)
        if entry is None:
            return
        now = self._clock()
        entry.stats = stats
        entry.scraped_at = now
        entry.detected_engine = stats.engine
        entry.in_flight_at_scrape = entry.in_flight
        entry.prefix_window.add(now, (queries_delta, hits_delta))
        entry.tiers_reported = tier_deltas is not None
        if tier_deltas is not None:
            entry.tier_window.add(now, tier_deltas)
        entry.ttft_window.observe(now, stats.ttft_buckets)
        entry.e2e_window.observe(now, stats.e2e_buckets)
        self._load_changed(name)

    def scrape_failed(self, name: str, error: str) -> None:
        """A scrape of ``name`` failed: its engine gauges are unknown until the next good one."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.last_error, entry.last_error_at = error, self._clock()
            _forget_gauges(entry)
            self._load_changed(name)

    def now(self) -> float:
        """The fleet's clock (what the replicas' recent windows are kept in)."""
        return self._clock()

    def prefix_totals(self, now: float | None = None) -> tuple[float, float]:
        """Fleet prefix-cache ``(queries, hits)`` over the same window as each replica's hit rate."""
        at = self._clock() if now is None else now
        queries = hits = 0.0
        for entry in self._entries.values():
            q, h = entry.prefix_totals(at)
            queries += q
            hits += h
        return queries, hits


def _forget_gauges(entry: ReplicaEntry) -> None:
    """A dead replica's KV usage and queue lengths are unknown, not the last values seen."""
    if entry.stats is not None:
        entry.stats = dataclasses.replace(entry.stats, kv_usage=None, running=None, waiting=None)


def _capacity(stats: ReplicaStats | None) -> int | None:
    if stats is None or stats.block_size is None or stats.num_blocks is None:
        return None
    return stats.block_size * stats.num_blocks
