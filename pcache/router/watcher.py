"""The fleet watcher: active health checks and ``/metrics`` scrapes of every replica.

Two loops on the router's event loop. Scraped pages are bounded (``scrape.max_bytes``) and parsed
in a worker thread. Health checks feed the fleet's failure/recovery thresholds
(passive failures from proxied requests feed the same counters). Scrapes go through the engine
adapters; per-replica counter deltas of the prefix cache (robust to resets) feed the fleet's recent
hit rate and the ledger. Each round checks all replicas concurrently and the next round starts one
interval after the previous one finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pcache.engines import ENGINES, metrics_path, parse_metrics
from pcache.engines.base import TIERS, ReplicaStats
from pcache.engines.rates import CounterRate
from pcache.fleet import Fleet
from pcache.ledger import Ledger
from pcache.router.config import HealthConfig, ScrapeConfig
from pcache.router.upstream import Upstream, UpstreamError

__all__ = ["FleetWatcher"]

log = logging.getLogger("pcache.router.watcher")


class _Counters:
    """Per-replica rate trackers of the prefix-cache counters."""

    __slots__ = ("hits", "queries", "tiers")

    def __init__(self) -> None:
        self.queries = CounterRate()
        self.hits = CounterRate()
        self.tiers = {tier: CounterRate() for tier in TIERS}

    def tier_deltas(self, stats: ReplicaStats) -> tuple[float, ...] | None:
        """Each tier's cached tokens since the last scrape, or None if the engine gives no split."""
        if stats.hits_by_tier is None:
            return None
        values = dict(stats.hits_by_tier)
        return tuple(self.tiers[tier].update(values.get(tier, 0.0)) or 0.0 for tier in TIERS)


def _parse(body: bytes, engine: str | None) -> ReplicaStats:
    return parse_metrics(body.decode("utf-8", "replace"), engine=engine)


class FleetWatcher:
    """Keeps the fleet's health and engine stats current."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        upstream: Upstream,
        ledger: Ledger,
        health: HealthConfig,
        scrape: ScrapeConfig,
    ) -> None:
        self.fleet = fleet
        self.upstream = upstream
        self.ledger = ledger
        self.health = health
        self.scrape = scrape
        self._counters: dict[str, _Counters] = {}
        self._scrape_errors: dict[str, str] = {}  # the last failed scrape's error, until one works
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(self.check_all, self.health.interval_s), name="health"),
            asyncio.create_task(self._loop(self.scrape_all, self.scrape.interval_s), name="scrape"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _scrape_failed(self, name: str, error: str) -> None:
        """Record a failed scrape; log it when it differs from the replica's previous one (a good
        health check clears the replica's last error, so the log is where a bad page stays seen)."""
        self.fleet.scrape_failed(name, error)
        if self._scrape_errors.get(name) != error:
            self._scrape_errors[name] = error
            log.warning("replica %s: %s", name, error)

    def forget(self, name: str) -> None:
        """Drop the counter state of a removed replica."""
        self._counters.pop(name, None)

    async def _loop(self, round_: Callable[[], Awaitable[None]], interval_s: float) -> None:
        while True:
            try:
                await round_()
            except Exception:  # a bug in one round must not stop the watcher
                log.exception("watcher round failed")
            await asyncio.sleep(interval_s)

    # ---- health ---------------------------------------------------------------------------------

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(entry.name) for entry in self.fleet.entries()))

    async def check(self, name: str) -> bool:
        """One health check of ``name``; returns whether it passed."""
        if name not in self.fleet:
            return False
        url = self.fleet.url(name) + self.health.path
        try:
            result = await self.upstream.fetch(url, self.health.timeout_s)
        except UpstreamError as exc:
            error = f"health check failed: {exc}"
            ok = False
        else:
            ok = result.status == 200
            error = f"health check answered HTTP {result.status}"
        if ok:
            if self.fleet.report_success(name):
                log.info("replica %s is healthy again", name)
        elif self.fleet.report_failure(name, error):
            log.warning("replica %s marked unhealthy: %s", name, error)
        return ok

    # ---- scrapes --------------------------------------------------------------------------------

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape_one(entry.name) for entry in self.fleet.entries()))

    def _paths(self, engine: str | None, detected: str | None) -> list[str]:
        """Where to look for metrics: the engine's path, or (unknown engine) every known path."""
        if engine is not None:
            return [metrics_path(engine)]
        if detected is not None and detected != "unknown":
            return [metrics_path(detected)]
        return list(dict.fromkeys(metrics_path(e) for e in ("vllm", *ENGINES)))

    async def scrape_one(self, name: str) -> bool:
        """Scrape ``name``'s metrics into the fleet and the ledger; returns whether it worked."""
        if name not in self.fleet:
            return False
        entry = self.fleet.get(name)
        engine = None if entry.engine == "auto" else entry.engine
        error = "no metrics path answered"
        for path in self._paths(engine, entry.detected_engine):
            try:
                result = await self.upstream.fetch(
                    entry.url + path, self.scrape.timeout_s, self.scrape.max_bytes
                )
            except UpstreamError as exc:
                self._scrape_failed(name, f"scrape failed: {exc}")
                return False
            if result.status == 200:
                break
            error = f"{path} answered HTTP {result.status}"
        else:
            self._scrape_failed(name, error)
            return False
        try:
            # Parsing is pure Python: in a thread the GIL still changes hands every few ms, so the
            # event loop keeps serving while a large (but bounded) page is read.
            stats = await asyncio.to_thread(_parse, result.body, engine)
        except ValueError as exc:
            self._scrape_failed(name, f"unreadable {path}: {exc}")
            return False
        if self._scrape_errors.pop(name, None) is not None:
            log.info("replica %s: /metrics readable again", name)
        counters = self._counters.setdefault(name, _Counters())
        queries_delta = counters.queries.update(stats.prefix_queries) or 0.0
        hits_delta = min(counters.hits.update(stats.prefix_hits) or 0.0, queries_delta)
        self.fleet.apply_stats(name, stats, queries_delta, hits_delta, counters.tier_deltas(stats))
        if queries_delta > 0:
            self.ledger.record_engine_counters(name, queries_delta, hits_delta)
        return True
