"""How often the router's cached-token prediction was right, request by request.

Each routed request's prediction (``x-pcache-predicted-cached-tokens``) is compared with the
engine's ``usage.prompt_tokens_details.cached_tokens`` for the replica that served it. Exported as
``pcache_prediction_exact_ratio``, a histogram of the error (predicted - reported, in tokens), and
per replica (with the source the prediction came from) for status.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["PredictionAccuracy", "ReplicaAccuracy"]

_ERROR_BUCKETS = (-4096, -1024, -256, -64, -16, -1, 0, 16, 64, 256, 1024, 4096, float("inf"))


@dataclass(slots=True)
class ReplicaAccuracy:
    """One replica's tally: compared requests, exact ones, and the sum of absolute errors."""

    compared: int = 0
    exact: int = 0
    abs_error_tokens: int = 0

    @property
    def exact_ratio(self) -> float | None:
        return self.exact / self.compared if self.compared else None


class PredictionAccuracy:
    """Tallies predictions against engine-reported cached tokens."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas: dict[str, ReplicaAccuracy] = {}
        self.by_source: Counter[tuple[str, bool]] = Counter()  # (source, exact) -> requests
        self._error = Histogram(
            "pcache_prediction_error_tokens",
            "Predicted minus engine-reported cached prompt tokens, per served request",
            buckets=_ERROR_BUCKETS,
            registry=registry,
        )
        self._exact_ratio = Gauge(
            "pcache_prediction_exact_ratio",
            "Share of served requests whose predicted cached tokens equalled the engine's report",
            registry=registry,
        )

    def record(self, replica: str, source: str, predicted: int, reported: int) -> None:
        tally = self.replicas.setdefault(replica, ReplicaAccuracy())
        error = predicted - reported
        tally.compared += 1
        tally.exact += error == 0
        tally.abs_error_tokens += abs(error)
        self.by_source[(source, error == 0)] += 1
        self._error.observe(error)
        ratio = self.exact_ratio()
        if ratio is not None:
            self._exact_ratio.set(ratio)

    def exact_ratio(self) -> float | None:
        compared = sum(t.compared for t in self.replicas.values())
        return sum(t.exact for t in self.replicas.values()) / compared if compared else None
