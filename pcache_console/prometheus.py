"""Fill the console's charts with the last window of history from Prometheus.

Range queries (``prometheus-api-client``) on what Prometheus scraped from the router (``pcache_*``)
and from the replicas (``vllm:*``). Replica series are matched to replica names by a ``replica``
target label when the scrape config sets one (``configs/prometheus.yml`` does), else by the target's
``instance`` (``host:port`` of the replica's URL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pcache.api import StatusSnapshot
from pcache_console.history import Backfill, FleetPoint

__all__ = ["QUERIES", "load_history"]

QUERIES = {
    "fleet_hit_rate": "max(pcache_engine_hit_rate)",
    "drift_ratio": "max(pcache_drift_ratio)",
    # Direct mode (no router scraped): the fleet hit rate from the replicas' counters.
    "replicas_hit_rate": (
        "sum(rate(vllm:prefix_cache_hits_total[{rate}])) / sum(rate(vllm:prefix_cache_queries_total[{rate}]))"
    ),
    # Replicas' own view: prefix-cache hits over queries (tokens), per scrape target.
    "replica_hit_rate": (
        "sum by (instance, replica) (rate(vllm:prefix_cache_hits_total[{rate}]))"
        " / sum by (instance, replica) (rate(vllm:prefix_cache_queries_total[{rate}]))"
    ),
    "replica_kv": "max by (instance, replica) (vllm:kv_cache_usage_perc)",
    # The router's copy of KV usage, for replicas Prometheus does not scrape itself.
    "router_replica_kv": "max by (replica) (pcache_replica_kv_usage)",
}


def _series(result: list[dict[str, Any]]) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    out = []
    for item in result:
        values = []
        for t, raw in item.get("values", []):
            value = float(raw)
            if value == value:  # NaN where a rate had no data (0/0)
                values.append((float(t), value))
        out.append((item.get("metric", {}), values))
    return out


def _replica_of(labels: Mapping[str, str], by_instance: Mapping[str, str]) -> str | None:
    return labels.get("replica") or by_instance.get(labels.get("instance", ""))


def load_history(
    url: str,
    status: StatusSnapshot,
    *,
    window_s: float = 900.0,
    step_s: float = 15.0,
    now: datetime | None = None,
    timeout_s: float = 5.0,
) -> Backfill:
    """Query the last ``window_s`` seconds; raises on an unreachable or failing Prometheus."""
    from prometheus_api_client import PrometheusConnect

    end = now or datetime.now(UTC)
    start = datetime.fromtimestamp(end.timestamp() - window_s, UTC)
    prom = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s)
    step = f"{max(step_s, 1.0):g}s"
    rate_window = f"{max(int(step_s * 4), 30)}s"

    def query(name: str) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        promql = QUERIES[name].format(rate=rate_window)
        return _series(prom.custom_query_range(promql, start_time=start, end_time=end, step=step))

    by_instance = {urlsplit(r.url).netloc: r.name for r in status.replicas}
    backfill = Backfill()
    hit = dict(next(iter(query("fleet_hit_rate")), ({}, []))[1]) or dict(
        next(iter(query("replicas_hit_rate")), ({}, []))[1]
    )
    drift = dict(next(iter(query("drift_ratio")), ({}, []))[1])
    backfill.fleet = [FleetPoint(t, hit.get(t), drift.get(t)) for t in sorted(set(hit) | set(drift))]
    for name, target in (("router_replica_kv", backfill.kv_usage), ("replica_kv", backfill.kv_usage)):
        for labels, values in query(name):
            replica = _replica_of(labels, by_instance)
            if replica is not None and values:
                target[replica] = [v for _, v in values]
    for labels, values in query("replica_hit_rate"):
        replica = _replica_of(labels, by_instance)
        if replica is not None and values:
            backfill.hit_rate[replica] = [v for _, v in values]
    return backfill
