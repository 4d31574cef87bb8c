"""Live routing: request -> fingerprint -> policy decision, booked in the ledger and the metrics.

The one place the daemon calls the routing core. The proxy calls :meth:`Routing.route`, the admin
API :meth:`Routing.explain` (same computation, nothing booked). The Tier-1 index is rebuilt by
:meth:`Routing.set_tier1` whenever the registry changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pcache.fingerprint import Fingerprint
from pcache.fleet import Fleet
from pcache.fleet_view import FleetView, Tier1Prefix
from pcache.ledger import Ledger
from pcache.policy.base import Decision, Exclusion, Outcome, Policy
from pcache.prompt import FingerprintConfig, Tier1Index, fingerprint_request, prefix_blocks
from pcache.router.metrics import RouterMetrics

__all__ = ["Routing"]

# A candidate left out only for load is still an owner (the prefix is cached there).
_OWNER_EXCLUSIONS = frozenset({None, Exclusion.OVER_LOAD_BOUND})


class Routing:
    """Fingerprints requests and routes them with the configured policy over the live fleet."""

    def __init__(
        self,
        *,
        policy: Policy,
        fleet: Fleet,
        config: FingerprintConfig,
        ledger: Ledger,
        metrics: RouterMetrics,
    ) -> None:
        self.policy = policy
        self.fleet = fleet
        self.config = config
        self.ledger = ledger
        self.metrics = metrics
        self._index: Tier1Index | None = None

    def blocks_of(self, text: str, as_: str) -> tuple[int, ...]:
        """The blocks a Tier-1 prefix covers, rendered exactly as a real request renders it."""
        if as_ not in ("chat", "completion"):
            raise ValueError(f"as must be chat or completion, not {as_!r}")
        return prefix_blocks(text, "chat" if as_ == "chat" else "completion", self.config)

    def set_tier1(self, prefixes: Iterable[Tier1Prefix]) -> None:
        """Replace the Tier-1 registry (fleet view and matching index)."""
        registry = [p for p in prefixes if p.blocks]
        self.fleet.set_tier1(registry)
        self._index = Tier1Index({p.name: p.blocks for p in registry}) if registry else None

    def fingerprint(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> Fingerprint:
        """Raises :class:`pcache.prompt.PromptError` for malformed or empty bodies."""
        return fingerprint_request(body, headers, self.config, self._index)

    def route(self, fingerprint: Fingerprint) -> Decision:
        """Decide and book: the policy's memory, the ledger, the metrics."""
        started = time.perf_counter()
        decision = self.policy.route(fingerprint, self.fleet.view())
        self.metrics.decision.observe(time.perf_counter() - started)
        self.ledger.record_route(fingerprint, decision)
        self.metrics.count_request(decision.replica or "none", decision.reason.value)
        if decision.drift is not None:
            self.metrics.home_moves.labels(decision.drift.cause.value).inc()
        if decision.predicted_cached_blocks:
            self.metrics.predicted_cached.inc(fingerprint.tokens_in(decision.predicted_cached_blocks))
        return decision

    def explain(self, fingerprint: Fingerprint) -> Decision:
        return self.policy.explain(fingerprint, self.fleet.view())

    def owners_of(self, prefix: Tier1Prefix, view: FleetView | None = None) -> list[str]:
        """Where the policy sends a request carrying exactly this Tier-1 prefix now (or in ``view``):
        its candidates not left out as non-owners, unpinned, of another group or unroutable."""
        view = view or self.fleet.view()
        if view.tier1.get(prefix.name) != prefix:
            view = FleetView(replicas=view.replicas, tier1={**view.tier1, prefix.name: prefix})
        probe = Fingerprint(
            blocks=prefix.blocks,
            session=None,
            prompt_tokens=len(prefix.blocks) * self.config.block_tokens,
            tier1=prefix.name,
            tier1_blocks=len(prefix.blocks),
            block_tokens=self.config.block_tokens,
        )
        decision = self.policy.explain(probe, view)
        return [c.replica for c in decision.candidates if c.excluded in _OWNER_EXCLUSIONS]

    def owners(self, view: FleetView | None = None) -> dict[str, list[str]]:
        """Current owners of every registered Tier-1 prefix."""
        view = view or self.fleet.view()
        return {name: self.owners_of(prefix, view) for name, prefix in view.tier1.items()}

    def observe(self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome) -> None:
        """Report a finished request back to the policy and the ledger."""
        self.policy.observe(fingerprint, decision, outcome)
        self.ledger.record_outcome(fingerprint, decision, outcome)
        if outcome.cached_tokens is not None:
            self.metrics.reported_cached.inc(outcome.cached_tokens)
        if outcome.prompt_tokens is not None:
            self.metrics.reported_prompt.inc(outcome.prompt_tokens)
