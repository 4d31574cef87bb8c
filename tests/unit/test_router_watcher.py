"""The fleet watcher over an httpx MockTransport (the replicas' HTTP is the edge): health
thresholds, scrapes through the engine adapters, counter deltas into the fleet and the ledger."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from pcache.fleet import Fleet
from pcache.fleet_view import ReplicaState
from pcache.ledger import Ledger
from pcache.router.config import HealthConfig, ScrapeConfig
from pcache.router.upstream import HttpxUpstream
from pcache.router.watcher import FleetWatcher

CAPTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "engine-metrics" / "vllm_metrics.txt"
).read_text()


def _vllm(queries: float, hits: float, waiting: int) -> str:
    """The real vLLM capture with chosen counter and queue values."""
    text = re.sub(r"(vllm:prefix_cache_queries_total\{[^}]*\}) \S+", rf"\1 {queries}", CAPTURE)
    text = re.sub(r"(vllm:prefix_cache_hits_total\{[^}]*\}) \S+", rf"\1 {hits}", text)
    return re.sub(r"(vllm:num_requests_waiting\{[^}]*\}) \S+", rf"\1 {waiting}", text)


class Replica:
    """What one replica answers: a health status and its current /metrics text."""

    def __init__(self) -> None:
        self.health = 200
        self.metrics = _vllm(0, 0, 0)
        self.metrics_path = "/metrics"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(self.health)
        if request.url.path == self.metrics_path:
            return httpx.Response(200, text=self.metrics)
        return httpx.Response(404)


def _watcher(replica: Replica) -> tuple[FleetWatcher, Fleet, Ledger]:
    fleet = Fleet(failure_threshold=2, recovery_threshold=2)
    fleet.add("r1", "http://r1")
    ledger = Ledger()
    upstream = HttpxUpstream(
        connect_timeout_s=1,
        read_timeout_s=1,
        max_connections=4,
        transport=httpx.MockTransport(replica.handle),
    )
    watcher = FleetWatcher(
        fleet=fleet, upstream=upstream, ledger=ledger, health=HealthConfig(), scrape=ScrapeConfig()
    )
    return watcher, fleet, ledger


async def test_failed_checks_mark_unhealthy_and_good_ones_bring_it_back() -> None:
    replica = Replica()
    watcher, fleet, _ = _watcher(replica)
    replica.health = 503
    assert await watcher.check("r1") is False
    assert fleet.get("r1").state is ReplicaState.HEALTHY  # one failure is below the threshold
    await watcher.check("r1")
    assert fleet.get("r1").state is ReplicaState.UNHEALTHY
    assert "HTTP 503" in (fleet.get("r1").last_error or "")
    replica.health = 200
    await watcher.check("r1")
    await watcher.check("r1")
    assert fleet.get("r1").state is ReplicaState.HEALTHY


async def test_scrapes_feed_load_hit_rate_and_the_ledger() -> None:
    replica = Replica()
    watcher, fleet, ledger = _watcher(replica)
    replica.metrics = _vllm(1000, 100, 3)
    assert await watcher.scrape_one("r1")
    replica.metrics = _vllm(3000, 1100, 5)
    assert await watcher.scrape_one("r1")
    entry = fleet.get("r1")
    assert entry.detected_engine == "vllm"
    assert fleet.view().by_name("r1").load == 5  # type: ignore[union-attr]
    assert entry.hit_rate(entry.scraped_at or 0.0) == 0.5  # (1100 - 100) / (3000 - 1000)
    assert ledger.hit_rate() == 0.5


async def test_a_counter_reset_counts_from_zero() -> None:
    replica = Replica()
    watcher, fleet, _ = _watcher(replica)
    replica.metrics = _vllm(5000, 4000, 0)
    await watcher.scrape_one("r1")
    replica.metrics = _vllm(200, 50, 0)  # the replica restarted
    await watcher.scrape_one("r1")
    entry = fleet.get("r1")
    assert entry.hit_rate(entry.scraped_at or 0.0) == 0.25


async def test_an_auto_engine_is_found_at_trtllm_serves_metrics_path() -> None:
    replica = Replica()
    replica.metrics_path = "/prometheus/metrics"
    watcher, fleet, _ = _watcher(replica)
    assert await watcher.scrape_one("r1")
    assert fleet.get("r1").stats is not None


async def test_unreadable_metrics_are_reported_not_raised() -> None:
    replica = Replica()
    watcher, fleet, _ = _watcher(replica)
    replica.metrics_path = "/nowhere"
    assert await watcher.scrape_one("r1") is False
    assert "HTTP 404" in (fleet.get("r1").last_error or "")
