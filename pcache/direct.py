"""Direct mode: a :class:`~pcache.api.StatusSnapshot` built from replicas' ``/metrics``, no router.

For fleets not (yet) behind the router, ``pcache status --replicas URL,...`` scrapes each replica
through the engine adapters and fills the same wire model the router serves, so the CLI table and
the console render both alike. Only the router knows sessions, Tier-1 owners and drift, so those
stay empty. Rates (requests/s, the recent hit rate) need two scrapes: pass back the state returned
by the previous call.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from pcache import __version__
from pcache.api import ReplicaStatus, RouterInfo, StatusSnapshot
from pcache.engines import parse_metrics
from pcache.engines.base import ReplicaStats
from pcache.engines.histogram import merge_buckets, quantile
from pcache.engines.rates import increase
from pcache.engines.window import bucket_increase

__all__ = ["DirectState", "direct_snapshot", "imbalance_callouts", "replica_names"]

KV_PRESSURE = 0.85  # a replica at or above this KV usage ...
KV_GAP = 0.25  # ... and this far above the fleet mean is called out
LOAD_SKEW = 2.0  # a replica with more than this times the mean load is called out
LOAD_FLOOR = 4  # ... when its load is at least this (ignore noise on an idle fleet)


@dataclass(frozen=True, slots=True)
class DirectState:
    """The last successful scrape of each replica (monotonic time, stats), for rates."""

    scrapes: Mapping[str, tuple[float, ReplicaStats]] = field(default_factory=dict)


def replica_names(urls: Sequence[str]) -> dict[str, str]:
    """Name replicas given as bare URLs by ``host:port``; ``name=URL`` keeps its name."""
    named: dict[str, str] = {}
    for entry in urls:
        name, sep, url = entry.partition("=")
        if not sep or "://" in name:
            url = entry
            parts = urlsplit(url)
            name = parts.netloc or url
        named[name] = url.rstrip("/")
    return named


async def direct_snapshot(
    urls: Mapping[str, str] | Sequence[str],
    http: httpx.AsyncClient,
    previous: DirectState | None = None,
) -> tuple[StatusSnapshot, DirectState]:
    """Scrape every replica concurrently and assemble a status snapshot plus the state for rates."""
    named = dict(urls) if isinstance(urls, Mapping) else replica_names(urls)
    previous = previous or DirectState()
    results = await asyncio.gather(*(_scrape(http, url) for url in named.values()))
    now = time.monotonic()
    rows: list[ReplicaStatus] = []
    scrapes: dict[str, tuple[float, ReplicaStats]] = {}
    for (name, url), result in zip(named.items(), results, strict=True):
        if isinstance(result, str):
            rows.append(
                ReplicaStatus(
                    name=name, url=url, engine="unknown", state="unhealthy", stale=True, last_error=result
                )
            )
            continue
        scrapes[name] = (now, result)
        rows.append(_row(name, url, result, previous.scrapes.get(name), now))
    rows.sort(key=lambda row: row.name)
    all_row = _all_row(rows, [scrapes.get(row.name) for row in rows], previous)
    info = RouterInfo(
        url="",
        admin_url="",
        policy="direct",
        version=__version__,
        uptime_s=0.0,
        requests_per_s=all_row.requests_per_s,
        requests_total=all_row.requests_total,
        hit_rate=all_row.hit_rate,
        generated_at=time.time(),
    )
    snapshot = StatusSnapshot(router=info, replicas=rows, all=all_row, callouts=imbalance_callouts(rows))
    return snapshot, DirectState(scrapes=scrapes)


async def _scrape(http: httpx.AsyncClient, url: str) -> ReplicaStats | str:
    """The replica's parsed metrics, or a one-line reason it could not be read."""
    try:
        response = await http.get(f"{url}/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)
    except httpx.HTTPStatusError as exc:
        return f"/metrics answered HTTP {exc.response.status_code}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except ValueError as exc:
        return f"unreadable /metrics: {exc}"


def _delta(current: float | None, before: float | None) -> float | None:
    """Counter increase between two scrapes (a counter that went down was reset: count from 0)."""
    if current is None or before is None:
        return None
    return increase(current, before)


def _ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def _hits_and_queries(
    stats: ReplicaStats, before: tuple[float, ReplicaStats] | None
) -> tuple[float | None, float | None]:
    """Prefix-cache (hits, queries) since the previous scrape, or since start without one."""
    if before is None:
        return stats.prefix_hits, stats.prefix_queries
    return _delta(stats.prefix_hits, before[1].prefix_hits), _delta(
        stats.prefix_queries, before[1].prefix_queries
    )


def _rate(stats: ReplicaStats, before: tuple[float, ReplicaStats] | None, now: float) -> float:
    if before is None or now <= before[0]:
        return 0.0
    increase = _delta(stats.requests_success, before[1].requests_success)
    return (increase or 0.0) / (now - before[0])


def _recent_buckets(
    current: Sequence[tuple[float, float]] | None, before: Sequence[tuple[float, float]] | None
) -> list[tuple[float, float]] | None:
    """Buckets observed since the previous scrape; without one, since the engine started."""
    if not current:
        return None
    if not before:
        return list(current)
    recent = bucket_increase(tuple(sorted(current)), tuple(sorted(before)))
    return list(recent) if recent and recent[-1][1] > 0 else None


def _row(
    name: str, url: str, stats: ReplicaStats, before: tuple[float, ReplicaStats] | None, now: float
) -> ReplicaStatus:
    """One replica's row. Hit rate and percentiles cover the same window: since the previous
    scrape (``window_s``), or since the engine started on the first one (``window_s`` is None)."""
    hits, queries = _hits_and_queries(stats, before)
    previous = before[1] if before is not None else None
    buckets = _recent_buckets(stats.ttft_buckets, previous.ttft_buckets if previous else None)
    e2e = _recent_buckets(stats.e2e_buckets, previous.e2e_buckets if previous else None)
    lifetime = list(stats.ttft_buckets) if stats.ttft_buckets else None
    return ReplicaStatus(
        name=name,
        url=url,
        engine=stats.engine,
        state="healthy",
        running=stats.running,
        waiting=stats.waiting,
        kv_usage=stats.kv_usage,
        hit_rate=_ratio(hits, queries),
        window_s=now - before[0] if before is not None else None,
        ttft_p50=quantile(buckets, 0.5) if buckets else None,
        ttft_p95=quantile(buckets, 0.95) if buckets else None,
        ttft_p99=quantile(buckets, 0.99) if buckets else None,
        e2e_p50=quantile(e2e, 0.5) if e2e else None,
        e2e_p95=quantile(e2e, 0.95) if e2e else None,
        e2e_p99=quantile(e2e, 0.99) if e2e else None,
        ttft_buckets=_finite(buckets),
        e2e_buckets=_finite(e2e),
        ttft_lifetime_p50=quantile(lifetime, 0.5) if lifetime else None,
        ttft_lifetime_p95=quantile(lifetime, 0.95) if lifetime else None,
        block_size=stats.block_size,
        kv_capacity_tokens=stats.block_size * stats.num_blocks
        if stats.block_size and stats.num_blocks
        else None,
        requests_per_s=_rate(stats, before, now),
        requests_total=int(stats.requests_success or 0),
        scrape_age_s=0.0,
    )


def _finite(buckets: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
    """The buckets as the wire carries them: JSON has no +Inf, so only finite edges (like the router)."""
    if not buckets:
        return None
    return [(le, count) for le, count in buckets if math.isfinite(le)] or None


def _sum(values: Sequence[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _all_row(
    rows: Sequence[ReplicaStatus],
    scrapes: Sequence[tuple[float, ReplicaStats] | None],
    previous: DirectState,
) -> ReplicaStatus:
    """Fleet totals: sums, token-weighted hit rate, percentiles from the merged TTFT buckets, all
    over the replicas' window (since the previous scrape, or since start on the first)."""
    hits_total = 0.0
    queries_total = 0.0
    for row, scrape in zip(rows, scrapes, strict=True):
        if scrape is None:
            continue
        hits, queries = _hits_and_queries(scrape[1], previous.scrapes.get(row.name))
        if hits is not None and queries is not None:
            hits_total += hits
            queries_total += queries
    kv = [row.kv_usage for row in rows if row.kv_usage is not None]
    recent = []
    for row, scrape in zip(rows, scrapes, strict=True):
        if scrape is not None:
            before = previous.scrapes.get(row.name)
            recent.append(_recent_buckets(scrape[1].ttft_buckets, before[1].ttft_buckets if before else None))
    merged_list = list(merge_buckets(recent)) or None
    windows = [row.window_s for row in rows if row.window_s is not None]
    engines = sorted({row.engine for row in rows if row.engine != "unknown"})
    return ReplicaStatus(
        name="ALL",
        url="",
        engine=engines[0] if len(engines) == 1 else ("mixed" if engines else "unknown"),
        state="healthy" if any(row.state == "healthy" for row in rows) else "unhealthy",
        running=_sum([row.running for row in rows]),
        waiting=_sum([row.waiting for row in rows]),
        kv_usage=sum(kv) / len(kv) if kv else None,
        hit_rate=_ratio(hits_total, queries_total),
        window_s=max(windows) if windows else None,
        ttft_p50=quantile(merged_list, 0.5) if merged_list else None,
        ttft_p95=quantile(merged_list, 0.95) if merged_list else None,
        ttft_buckets=_finite(merged_list),
        requests_per_s=sum(row.requests_per_s for row in rows),
        requests_total=sum(row.requests_total for row in rows),
    )


def imbalance_callouts(rows: Sequence[ReplicaStatus]) -> list[str]:
    """One line per replica that stands out: down, KV pressure far above the mean, or load skew."""
    callouts: list[str] = []
    live = [row for row in rows if row.state == "healthy" and not row.stale]
    for row in rows:
        if row.stale or row.state == "unhealthy":
            callouts.append(f"{row.name}: {row.state}, {row.last_error or 'no recent scrape'}")
    kv = [row.kv_usage for row in live if row.kv_usage is not None]
    if len(kv) >= 2:
        mean = sum(kv) / len(kv)
        for row in live:
            if row.kv_usage is not None and row.kv_usage >= KV_PRESSURE and row.kv_usage - mean >= KV_GAP:
                callouts.append(f"{row.name}: KV usage {row.kv_usage:.0%}, fleet mean {mean:.0%}")
    loads = {row.name: _load(row) for row in live}
    if len(loads) >= 2:
        mean_load = sum(loads.values()) / len(loads)
        for name, load in sorted(loads.items()):
            if load >= LOAD_FLOOR and load > LOAD_SKEW * mean_load:
                callouts.append(f"{name}: load {load} (running+waiting), fleet mean {mean_load:.1f}")
    return callouts


def _load(row: ReplicaStatus) -> int:
    """Engine running + waiting; requests in flight through the router when the engine is silent."""
    running = row.running if row.running is not None else row.in_flight
    return running + (row.waiting or 0)
