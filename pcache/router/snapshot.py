"""Wire views of the live fleet: :class:`~pcache.api.ReplicaStatus` rows and the status snapshot."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

from pcache import __version__
from pcache.api import ErrorCounts, ReplicaStatus, RouterInfo, StatusSnapshot
from pcache.direct import imbalance_callouts
from pcache.engines.histogram import merge_buckets, quantile
from pcache.fleet import Fleet, ReplicaEntry
from pcache.ledger import Ledger
from pcache.router.error_window import ErrorWindow

__all__ = ["all_row", "error_callouts", "error_counts", "replica_status", "status_snapshot"]

ERROR_RATE_CALLOUT = 0.05  # a replica failing this share of its attempts is called out...
ERROR_COUNT_CALLOUT = 3  # ...once it has failed at least this many times in the window


def error_counts(errors: ErrorWindow, replica: str | None = None) -> ErrorCounts:
    """The window's errors by kind for ``replica`` (``None``: the fleet)."""
    return ErrorCounts(window_s=errors.window_s, **errors.counts(replica))


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
    full = [(float(le), float(c)) for le, c in stats.ttft_buckets] if stats and stats.ttft_buckets else None
    # JSON has no +Inf: the wire keeps the finite buckets (the +Inf count is the total anyway).
    buckets = [(le, c) for le, c in full if math.isfinite(le)] if full else None
    age = now - entry.scraped_at if entry.scraped_at is not None else None
    return ReplicaStatus(
        name=entry.name,
        url=entry.url,
        engine=entry.detected_engine or entry.engine,
        group=entry.group,
        weight=entry.weight,
        state=entry.state.value,
        in_flight=entry.in_flight,
        running=stats.running if stats else None,
        waiting=stats.waiting if stats else None,
        kv_usage=stats.kv_usage if stats else None,
        hit_rate=entry.hit_rate(now),
        ttft_p50=quantile(full, 0.5) if full else None,
        ttft_p95=quantile(full, 0.95) if full else None,
        ttft_buckets=buckets,
        sessions=sessions.get(entry.name, 0),
        tier1_owned=sorted(name for name, names in owners.items() if entry.name in names),
        tier1_pinned=sorted(name for name, names in pinned.items() if entry.name in names),
        requests_per_s=ledger.requests_per_s(entry.name),
        requests_total=ledger.requests_total(entry.name),
        errors=error_counts(errors, entry.name),
        error_rate=errors.error_rate(entry.name),
        scrape_age_s=age,
        last_error=entry.last_error,
        stale=age is None or age > stale_after_s,
    )


def _sum(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def all_row(rows: Sequence[ReplicaStatus], ledger: Ledger, errors: ErrorWindow) -> ReplicaStatus:
    """Fleet totals: sums, the ledger's token-weighted hit rate, percentiles from merged buckets."""
    kv = [r.kv_usage for r in rows if r.kv_usage is not None]
    bucket_sets = [r.ttft_buckets for r in rows if r.ttft_buckets]
    merged = [(float(le), float(c)) for le, c in merge_buckets(bucket_sets)] if bucket_sets else None
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
        hit_rate=ledger.hit_rate(),
        ttft_p50=quantile(merged, 0.5) if merged else None,
        ttft_p95=quantile(merged, 0.95) if merged else None,
        ttft_buckets=merged,
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
    totals = all_row(rows, ledger, errors)
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
    )
    return StatusSnapshot(
        router=info, replicas=rows, all=totals, callouts=[*error_callouts(rows), *imbalance_callouts(rows)]
    )
