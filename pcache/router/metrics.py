"""The router's own Prometheus metrics, in a private registry served on ``/metrics``.

Traffic counters and latency histograms are updated on the hot path; fleet-level gauges (replica
state, KV usage, drift ratio, hit rates) are refreshed from the fleet and the ledger at scrape time
by :meth:`RouterMetrics.refresh`, so they cost nothing per request.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pcache.engines.base import TIERS
from pcache.fleet import Fleet
from pcache.fleet_view import ReplicaState
from pcache.ledger import Ledger
from pcache.router.error_window import ErrorWindow

__all__ = ["CONTENT_TYPE", "RouterMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DECISION_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3)


class RouterMetrics:
    """Every ``pcache_*`` metric of the router, and the recent-error window ``errors`` that feeds
    the status snapshot's error rates (the same events, counted over the last minute)."""

    def __init__(self, errors: ErrorWindow | None = None) -> None:
        self.errors = errors or ErrorWindow()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pcache_requests", "Requests routed, by replica and reason", ["replica", "reason"], registry=r
        )
        self.responses = Counter(
            "pcache_responses", "Responses sent to clients, by status class", ["code"], registry=r
        )
        self.upstream_errors = Counter(
            "pcache_upstream_errors",
            "Failed attempts to a replica (connect, status, stream)",
            ["replica", "kind"],
            registry=r,
        )
        self.retries = Counter("pcache_retries", "Requests retried on another replica", registry=r)
        self.outlier_ejections = Counter(
            "pcache_outlier_ejections",
            "Replicas held out after consecutive failed requests (passive outlier detection)",
            ["replica"],
            registry=r,
        )
        self.panic_routes = Counter(
            "pcache_panic_routes",
            "Requests routed to unhealthy replicas because none was healthy (panic mode)",
            registry=r,
        )
        self.loop_lag = Gauge(
            "pcache_event_loop_lag_seconds",
            "Worst lateness of the router's event loop over the last 10 s (timer-measured)",
            registry=r,
        )
        self.loop_stall = Gauge(
            "pcache_event_loop_stall_seconds",
            "Worst CPU time the event loop's thread spent between two 50 ms ticks, over the last 10 s",
            registry=r,
        )
        self.ttfb = Histogram(
            "pcache_ttfb_seconds",
            "Time from request arrival to the first upstream byte",
            ["replica"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "pcache_request_duration_seconds",
            "Time from request arrival to the end of the response",
            ["replica"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decision = Histogram(
            "pcache_decision_seconds",
            "Time to fingerprint and route a request",
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.home_moves = Counter(
            "pcache_session_home_moves", "Session home moves, by cause", ["cause"], registry=r
        )
        self.predicted_cached = Counter(
            "pcache_predicted_cached_tokens", "Cached prompt tokens the router predicted", registry=r
        )
        self.reported_cached = Counter(
            "pcache_reported_cached_tokens",
            "Cached prompt tokens the engines reported in responses' usage",
            registry=r,
        )
        self.reported_prompt = Counter(
            "pcache_reported_prompt_tokens",
            "Prompt tokens the engines reported in responses' usage",
            registry=r,
        )
        self.drift_ratio = Gauge(
            "pcache_drift_ratio", "Session home moves per session request, recent window", registry=r
        )
        self.hit_rate = Gauge(
            "pcache_engine_hit_rate", "Fleet engine-reported prefix-cache hit rate, recent window", registry=r
        )
        self.predicted_hit_rate = Gauge(
            "pcache_predicted_hit_rate", "Router-predicted prefix-cache hit rate, recent window", registry=r
        )
        self.replica_state = Gauge(
            "pcache_replica_state", "1 for the replica's current state", ["replica", "state"], registry=r
        )
        self.replica_kv = Gauge(
            "pcache_replica_kv_usage", "Engine KV-cache usage (0..1)", ["replica"], registry=r
        )
        self.replica_in_flight = Gauge(
            "pcache_replica_in_flight", "Requests in flight through this router", ["replica"], registry=r
        )
        self.replica_tier_hit_rate = Gauge(
            "pcache_replica_hit_rate_by_tier",
            "Engine-reported cache hit rate by the KV tier that supplied the tokens (gpu, host, disk, "
            "peer, pool), recent window; a replica's tiers sum to its hit rate",
            ["replica", "tier"],
            registry=r,
        )
        self._known: set[str] = set()
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """A labelled child, cached: ``labels()`` costs microseconds on every request otherwise."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_request(self, replica: str, reason: str) -> None:
        self._child(self.requests, replica, reason).inc()

    def count_response(self, status: int, replica: str | None = None, *, mid_stream: bool = False) -> None:
        """A response sent to a client (``mid_stream``: a 200 stream that broke after its first byte)."""
        self._child(self.responses, _STATUS_CLASSES.get(status // 100, "other")).inc()
        self.errors.response(status, replica, mid_stream=mid_stream)

    def count_upstream_error(self, replica: str, kind: str, *, mid_stream: bool = False) -> None:
        """A failed attempt on ``replica``; ``kind`` is connect, status, body or stream."""
        self._child(self.upstream_errors, replica, kind).inc()
        if not mid_stream:  # a mid-stream failure is counted once, by its response
            self.errors.upstream_error(replica)

    def count_retry(self, left: str) -> None:
        """A request moved from replica ``left`` to another attempt."""
        self.retries.inc()
        self.errors.retry(left)

    def observe_ttfb(self, replica: str, seconds: float) -> None:
        self._child(self.ttfb, replica).observe(seconds)

    def observe_duration(self, replica: str, seconds: float) -> None:
        self._child(self.duration, replica).observe(seconds)

    def refresh(self, fleet: Fleet, ledger: Ledger) -> None:
        """Bring the fleet-level gauges up to date (called before each exposition)."""
        names = set()
        now = fleet.now()
        for entry in fleet.entries():
            names.add(entry.name)
            state = entry.state
            for candidate in ReplicaState:
                self.replica_state.labels(entry.name, candidate.value).set(1 if candidate is state else 0)
            kv = entry.stats.kv_usage if entry.stats is not None else None
            if kv is not None:
                self.replica_kv.labels(entry.name).set(kv)
            self.replica_in_flight.labels(entry.name).set(entry.in_flight)
            by_tier = entry.hit_rate_by_tier(now)
            for tier, rate in (by_tier or {}).items():
                self.replica_tier_hit_rate.labels(entry.name, tier).set(rate)
        for gone in self._known - names:
            for candidate in ReplicaState:
                self.replica_state.remove(gone, candidate.value)
            for tier in TIERS:
                with contextlib.suppress(KeyError):
                    self.replica_tier_hit_rate.remove(gone, tier)
            for gauge in (self.replica_kv, self.replica_in_flight):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._known = names
        for gauge, value in (
            (self.drift_ratio, ledger.drift_ratio()),
            (self.hit_rate, ledger.hit_rate()),
            (self.predicted_hit_rate, ledger.predicted_hit_rate()),
        ):
            gauge.set(value if value is not None else float("nan"))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
