"""Wire views of the live fleet: :class:`~pcache.api.ReplicaStatus` rows and the status snapshot."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pcache import __version__
from pcache.api import ErrorCounts, ReplicaStatus, RouterInfo, StatusSnapshot
from pcache.calibration import Calibration
from pcache.direct import imbalance_callouts
from pcache.engines.histogram import Buckets, merge_buckets, quantile
from pcache.engines.window import finite
from pcache.fleet import WINDOW_S, Fleet, ReplicaEntry
from pcache.kv.hub import KvEventsHub
from pcache.ledger import Ledger
from pcache.router.error_window import ErrorWindow
from pcache.router.prediction import PredictionAccuracy

__all__ = [
    "all_row",
    "error_callouts",
    "error_counts",
    "replica_status",
    "status_snapshot",
    "with_cache_index",
]

ERROR_RATE_CALLOUT = 0.05  # a replica failing this share of its attempts is called out...
ERROR_COUNT_CALLOUT = 3  # ...once it has failed at least this many times in the window


def error_counts(errors: ErrorWindow, replica: str | None = None) -> ErrorCounts:
    """The window's errors by kind for ``replica`` (``None``: the fleet)."""
    return ErrorCounts(window_s=errors.window_s, **errors.counts(replica))


_QUANTILES = (0.5, 0.95, 0.99)


def _quantiles(buckets: Buckets | None, prefix: str) -> dict[str, Any]:
    """``{prefix}_p50/_p95/_p99`` of cumulative buckets (``None`` without observations)."""
    return {f"{prefix}_p{round(q * 100)}": quantile(buckets, q) if buckets else None for q in _QUANTILES}


def replica_status(
    entry: ReplicaEntry,
    *,
    ledger: Ledger,
    errors: ErrorWindow,
    sessions: Mapping[str, int],
    owners: Mapping[str, list[str]],
    pinned: Mapping[str, Sequence[str]],
    stale_after_s: float,
    now: float,
) -> ReplicaStatus:
    stats = entry.stats
    age = now - entry.scraped_at if entry.scraped_at is not None else None
    stale = age is None or age > stale_after_s
    live = stats if stats is not None and entry.gauges_live and not stale else None
    lifetime = tuple(stats.ttft_buckets) if stats and stats.ttft_buckets else None
    ttft, e2e = entry.ttft_recent(now), entry.e2e_recent(now)
    return ReplicaStatus(
        name=entry.name,
        url=entry.url,
        engine=entry.detected_engine or entry.engine,
        group=entry.group,
        weight=entry.weight,
        state=entry.state.value,
        in_flight=entry.in_flight,
        running=live.running if live else None,
        waiting=live.waiting if live else None,
        kv_usage=live.kv_usage if live else None,
        load=entry.load,
        hit_rate=entry.hit_rate(now),
        hit_rate_by_tier=entry.hit_rate_by_tier(now),
        window_s=WINDOW_S,
        **_quantiles(ttft, "ttft"),
        **_quantiles(e2e, "e2e"),
        ttft_buckets=finite(ttft),
        e2e_buckets=finite(e2e),
        ttft_lifetime_p50=quantile(lifetime, 0.5) if lifetime else None,
        ttft_lifetime_p95=quantile(lifetime, 0.95) if lifetime else None,
        block_size=stats.block_size if stats else None,
        kv_capacity_tokens=(
            stats.block_size * stats.num_blocks if stats and stats.block_size and stats.num_blocks else None
        ),
        sessions=sessions.get(entry.name, 0),
        tier1_owned=sorted(name for name, names in owners.items() if entry.name in names),
        tier1_pinned=sorted(name for name, names in pinned.items() if entry.name in names),
        requests_per_s=ledger.requests_per_s(entry.name),
        requests_total=ledger.requests_total(entry.name),
        errors=error_counts(errors, entry.name),
        error_rate=errors.error_rate(entry.name),
        scrape_age_s=age,
        last_error=entry.last_error,
        last_error_at=entry.last_error_at,
        stale=stale,
    )


def _fleet_tiers(tiers: dict[str, float] | None, queries: float, hits: float) -> dict[str, float] | None:
    """The fleet's hit rate by tier; hits of replicas that give no split are booked to the GPU,
    so the parts still sum to the fleet's hit rate."""
    if tiers is None or not queries:
        return None
    tiers["gpu"] += max(0.0, hits - sum(tiers.values()))
    return {tier: value / queries for tier, value in tiers.items()}


def _sum(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _merged(bucket_sets: Sequence[Sequence[tuple[float, float]] | None]) -> Buckets | None:
    sets = [b for b in bucket_sets if b]
    return merge_buckets(sets) if sets else None


def all_row(
    rows: Sequence[ReplicaStatus],
    entries: Sequence[ReplicaEntry],
    ledger: Ledger,
    errors: ErrorWindow,
    now: float,
) -> ReplicaStatus:
    """Fleet totals over the replicas' own window: gauges summed over the replicas whose gauges are
    live (a dead replica's are unknown, not zero and not its last values), the token-weighted hit
    rate of the replicas' windowed counters (so it lies within their range), percentiles from the
    merged windowed buckets (never an average of percentiles)."""
    kv = [r.kv_usage for r in rows if r.kv_usage is not None]
    queries = hits = 0.0
    tiers: dict[str, float] | None = None
    for entry in entries:
        q, h = entry.prefix_totals(now)
        queries, hits = queries + q, hits + h
        by_tier = entry.tier_totals(now)
        if by_tier is not None:
            tiers = tiers or dict.fromkeys(by_tier, 0.0)
            for tier, value in by_tier.items():
                tiers[tier] += value
    ttft = _merged([e.ttft_recent(now) for e in entries])
    e2e = _merged([e.e2e_recent(now) for e in entries])
    lifetime = _merged([e.stats.ttft_buckets if e.stats else None for e in entries])
    engines = sorted({r.engine for r in rows})
    return ReplicaStatus(
        name="ALL",
        url="",
        engine=engines[0] if len(engines) == 1 else ("mixed" if engines else "unknown"),
        state="healthy" if any(r.state == "healthy" for r in rows) else "unhealthy",
        in_flight=sum(r.in_flight for r in rows),
        running=_sum([r.running for r in rows]),
        waiting=_sum([r.waiting for r in rows]),
        kv_usage=sum(kv) / len(kv) if kv else None,
        load=sum(r.load for r in rows),
        hit_rate=hits / queries if queries else None,
        # over the queries of every replica, so a replica without tiers counts as all GPU
        hit_rate_by_tier=_fleet_tiers(tiers, queries, hits),
        window_s=WINDOW_S,
        **_quantiles(ttft, "ttft"),
        **_quantiles(e2e, "e2e"),
        ttft_buckets=finite(ttft),
        e2e_buckets=finite(e2e),
        ttft_lifetime_p50=quantile(lifetime, 0.5) if lifetime else None,
        ttft_lifetime_p95=quantile(lifetime, 0.95) if lifetime else None,
        sessions=sum(r.sessions for r in rows),
        requests_per_s=ledger.requests_per_s(),
        requests_total=ledger.requests_total(),
        errors=error_counts(errors),
        error_rate=errors.error_rate(),
    )


def error_callouts(rows: Sequence[ReplicaStatus]) -> list[str]:
    """One line per replica whose recent error rate stands out, the worst first."""
    failing = [
        row
        for row in rows
        if row.error_rate is not None
        and row.error_rate >= ERROR_RATE_CALLOUT
        and row.errors.total >= ERROR_COUNT_CALLOUT
    ]
    failing.sort(key=lambda row: (-(row.error_rate or 0.0), row.name))
    return [
        f"{row.name}: {row.error_rate or 0.0:.0%} of attempts failed in the last {row.errors.window_s:g}s "
        f"({row.errors.upstream} upstream, {row.errors.mid_stream} mid-stream, {row.errors.router_5xx} 5xx)"
        for row in failing
    ]


def status_snapshot(
    fleet: Fleet,
    *,
    owners: Mapping[str, list[str]],
    ledger: Ledger,
    errors: ErrorWindow,
    sessions: Mapping[str, int],
    policy: str,
    url: str,
    admin_url: str,
    started_at: float,
    stale_after_s: float,
    state_store: str | None = None,
    state_error: str | None = None,
) -> StatusSnapshot:
    now = time.time()
    pinned = {name: p.pinned for name, p in fleet.tier1.items() if p.pinned}
    rows = [
        replica_status(
            entry,
            ledger=ledger,
            errors=errors,
            sessions=sessions,
            owners=owners,
            pinned=pinned,
            stale_after_s=stale_after_s,
            now=now,
        )
        for entry in fleet.entries()
    ]
    totals = all_row(rows, fleet.entries(), ledger, errors, now)
    info = RouterInfo(
        url=url,
        admin_url=admin_url,
        policy=policy,
        version=__version__,
        uptime_s=now - started_at,
        requests_per_s=totals.requests_per_s,
        requests_total=totals.requests_total,
        hit_rate=totals.hit_rate,
        predicted_hit_rate=ledger.predicted_hit_rate(),
        drift_ratio=ledger.drift_ratio(),
        generated_at=now,
        state_store=state_store,
        state_error=state_error,
    )
    callouts = [*error_callouts(rows), *imbalance_callouts(rows)]
    if state_error is not None:
        callouts.insert(
            0, "state store unreachable: serving with the last known state, operator writes refused"
        )
    return StatusSnapshot(router=info, replicas=rows, all=totals, callouts=callouts)


def with_cache_index(
    snapshot: StatusSnapshot, fleet: Fleet, kv: KvEventsHub | None, accuracy: PredictionAccuracy
) -> StatusSnapshot:
    """The snapshot with each replica's cache index source, KV-event ingestion, the KV its cached
    prefixes hold and its prediction accuracy."""
    rows = []
    capacity = {view.name: view.cache_capacity_tokens for view in fleet.view().replicas}
    for row in snapshot.replicas:
        update: dict[str, Any] = {}
        events = kv.status(row.name) if kv is not None else None
        if events is not None:
            update["kv_events"] = events
            update["cache_index"] = "precise" if events["precise"] else "approximate"
            held = events["cached_tokens_by_medium"]
            update["cached_prefix_tokens"] = held
            total = capacity.get(row.name)
            if total:
                update["cached_prefix_share"] = held.get("GPU", 0) / total
        tally = accuracy.replicas.get(row.name)
        if tally is not None and tally.compared:
            update["predictions"] = tally.compared
            update["prediction_exact_ratio"] = tally.exact_ratio
            update["prediction_mean_abs_error"] = tally.abs_error_tokens / tally.compared
        rows.append(row.model_copy(update=update) if update else row)
    compared = sum(t.compared for t in accuracy.replicas.values())
    totals = snapshot.all.model_copy(
        update={
            "predictions": compared,
            "prediction_exact_ratio": accuracy.exact_ratio(),
            "prediction_mean_abs_error": (
                sum(t.abs_error_tokens for t in accuracy.replicas.values()) / compared if compared else None
            ),
        }
    )
    quiet = sorted(r.name for r in rows if r.kv_events is not None and r.cache_index != "precise")
    callouts = list(snapshot.callouts)
    if quiet:
        callouts.append(f"{', '.join(quiet)}: KV events not live, routed on the approximate index")
    return snapshot.model_copy(update={"replicas": rows, "all": totals, "callouts": callouts})


def with_calibration(
    snapshot: StatusSnapshot, calibration: Calibration, chars_per_token: float
) -> StatusSnapshot:
    """The snapshot with each replica's learned characters per token and the fleet's value in use."""
    rows = [
        row.model_copy(
            update={
                "chars_per_token": (
                    calibration.chars_per_token(row.name) if calibration.calibrated(row.name) else None
                ),
                "calibration_samples": calibration.samples(row.name),
            }
        )
        for row in snapshot.replicas
    ]
    calibrated = calibration.calibrated()
    totals = snapshot.all.model_copy(
        update={
            "chars_per_token": calibration.chars_per_token() if calibrated else None,
            "calibration_samples": calibration.samples(),
            "kv_capacity_tokens": sum(r.kv_capacity_tokens for r in rows if r.kv_capacity_tokens) or None,
        }
    )
    router = snapshot.router.model_copy(
        update={"chars_per_token": chars_per_token, "chars_per_token_calibrated": calibrated}
    )
    return snapshot.model_copy(update={"replicas": rows, "all": totals, "router": router})
