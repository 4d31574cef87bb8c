"""Live routing: request -> fingerprint -> policy decision, booked in the ledger and the metrics.

The one place the daemon calls the routing core. The proxy calls :meth:`Routing.route`, the admin
API :meth:`Routing.explain` (same computation, nothing booked). The Tier-1 index is rebuilt by
:meth:`Routing.set_tier1` whenever the registry changes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pcache.calibration import Calibration, TokenModel
from pcache.fingerprint import Fingerprint
from pcache.fleet import Fleet
from pcache.fleet_view import FleetView, Tier1Prefix
from pcache.kv.hub import KvEventsHub
from pcache.kv.local_tokenizer import LocalTokenizer, TokenizerError
from pcache.kv.tokenize_client import EngineTokenize
from pcache.ledger import Ledger
from pcache.policy.base import Decision, Exclusion, Outcome, Policy
from pcache.prompt import (
    FingerprintConfig,
    Tier1Index,
    fingerprint_request,
    prefix_blocks,
    rendered_prefix,
)
from pcache.router.metrics import RouterMetrics
from pcache.router.outlier import panic_view
from pcache.router.prediction import PredictionAccuracy

__all__ = ["Routing"]

# A candidate left out only for load is still an owner (the prefix is cached there).
_OWNER_EXCLUSIONS = frozenset({None, Exclusion.OVER_LOAD_BOUND})
_RECALIBRATE = 0.005  # rebuild the counting config when the estimate moved by more than 0.5%


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
        self.kv: KvEventsHub | None = None  # the precise index's sources, when replicas have KV events
        self.tokenize: EngineTokenize | None = None
        self.tokenizers: dict[str, LocalTokenizer] = {}  # by served model name
        self.accuracy = PredictionAccuracy(metrics.registry)
        # Called with (session, replica) whenever a decision gives a session a (new) home, so the
        # routers sharing a state store can learn it (write-behind: never awaited here).
        self.on_new_home: Callable[[str, str], None] | None = None
        # Characters per token learned from the engines' usage.prompt_tokens (not with a tokenizer,
        # which counts exactly); the fingerprint config follows the fleet's estimate.
        self.calibration = Calibration(config.chars_per_token)
        self._counting = config
        self._model: TokenModel | None = None  # the calibrated token model ``_counting`` uses

    async def with_engine_tokens(self, fingerprint: Fingerprint, body: Mapping[str, Any]) -> Fingerprint:
        """``fingerprint`` with the prompt in the engine's token ids, when a precise index is live:
        from the model's local tokenizer when configured, else a live replica's ``/tokenize``;
        unchanged otherwise (and for a body the template refuses: the engine will say why)."""
        kv, tokenize = self.kv, self.tokenize
        if kv is None or not kv.any_live():
            return fingerprint
        model = body.get("model")
        local = self.tokenizers.get(model) if isinstance(model, str) else None
        if local is None and model is None and len(self.tokenizers) == 1:
            local = next(iter(self.tokenizers.values()))
        if local is not None:
            try:
                tokens = local.tokens(body)
            except TokenizerError:
                return fingerprint
            return fingerprint if tokens is None else dataclasses.replace(fingerprint, engine_tokens=tokens)
        source = next((n for n in self.fleet.routable_names() if kv.live(n) is not None), None)
        if source is None or tokenize is None:
            return fingerprint
        tokens = await tokenize.tokens(self.fleet.url(source), body)
        if tokens is None:
            return fingerprint
        return dataclasses.replace(fingerprint, engine_tokens=tokens)

    def predicted_tokens(self, fingerprint: Fingerprint, decision: Decision, replica: str) -> int:
        """Cached prompt tokens predicted on ``replica`` (0 for one the policy did not choose), in
        the engine's accounting. A precise match is that already; an approximate one is put through
        the engine's rule (whole blocks of its block size, at least one prompt token computed)."""
        if replica != decision.replica:
            return 0
        if self.source_of(decision) == "precise" and decision.predicted_cached_tokens is not None:
            return decision.predicted_cached_tokens
        tokens = decision.predicted_cached_tokens
        if tokens is None:
            tokens = fingerprint.tokens_in(decision.predicted_cached_blocks)
        entry = self.fleet.get(replica) if replica in self.fleet else None
        block = entry.stats.block_size if entry is not None and entry.stats is not None else None
        if block:
            tokens = min(tokens, max(fingerprint.prompt_tokens - 1, 0)) // block * block
        return tokens

    @staticmethod
    def source_of(decision: Decision) -> str:
        """Which index the chosen replica's match came from (precise | approximate)."""
        chosen = next((c for c in decision.candidates if c.replica == decision.replica), None)
        return (chosen.cache_source if chosen is not None else None) or "approximate"

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

    @property
    def tier1_index(self) -> Tier1Index | None:
        """The registered Tier-1 prefixes' index (None when there are none)."""
        return self._index

    def fingerprint(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> Fingerprint:
        """Raises :class:`pcache.prompt.PromptError` for malformed or empty bodies.

        Tokens are counted with the fleet's calibrated characters per token (the configured value
        until the engines' counts have been seen)."""
        return fingerprint_request(body, headers, self._counting, self._index)

    @property
    def chars_per_token(self) -> float:
        """The characters per token prompt-token estimates use now."""
        return self._counting.chars_per_token

    def prefix_tokens(self, text: str, as_: str) -> int:
        """Engine tokens a Tier-1 prefix takes, estimated with the calibrated characters per token."""
        rendered = rendered_prefix(text, "chat" if as_ == "chat" else "completion")
        return self._counting.count_tokens(rendered)

    def _calibrate(self, fingerprint: Fingerprint, outcome: Outcome) -> None:
        """Feed one relayed usage.prompt_tokens; re-derive the counting config when the estimate moved."""
        if self.config.tokenizer is not None or not fingerprint.prompt_chars or not outcome.prompt_tokens:
            return
        self.calibration.observe(outcome.replica, fingerprint.prompt_chars, outcome.prompt_tokens)
        if not self.calibration.calibrated():
            return
        model = self.calibration.model()
        current = self._model
        moved = current is None or abs(model.chars_per_token - current.chars_per_token) > (
            _RECALIBRATE * current.chars_per_token
        )
        if moved or (current is not None and abs(model.overhead - current.overhead) >= 1.0):
            self._model = model
            self._counting = dataclasses.replace(
                self.config,
                chars_per_token=model.chars_per_token,
                tokenizer=lambda text: model.tokens(len(text)),
            )

    def route(self, fingerprint: Fingerprint) -> Decision:
        """Decide and book: the policy's memory, the ledger, the metrics."""
        started = time.perf_counter()
        view = self.fleet.view()
        decision = self.policy.route(fingerprint, view)
        if decision.replica is None and (panic := panic_view(view)) is not None:
            # Every replica is marked unhealthy: try them anyway (503 only if none answers).
            decision = self.policy.route(fingerprint, panic)
            self.metrics.panic_routes.inc()
        self.metrics.decision.observe(time.perf_counter() - started)
        predicted = self.predicted_tokens(fingerprint, decision, decision.replica) if decision.replica else 0
        self.ledger.record_route(fingerprint, decision, predicted_tokens=predicted)
        self.metrics.count_request(decision.replica or "none", decision.reason.value)
        if decision.drift is not None:
            self.metrics.home_moves.labels(decision.drift.cause.value).inc()
        if predicted:
            self.metrics.predicted_cached.inc(predicted)
        if decision.new_home and self.on_new_home is not None and decision.session and decision.replica:
            self.on_new_home(decision.session, decision.replica)
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
            prompt_tokens=len(prefix.blocks) * self._counting.block_tokens,
            tier1=prefix.name,
            tier1_blocks=len(prefix.blocks),
            block_tokens=self._counting.block_tokens,
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
        if outcome.ok:
            self._calibrate(fingerprint, outcome)
        served = outcome.ok and outcome.replica == decision.replica and fingerprint.prompt_tokens > 0
        if served and outcome.cached_tokens is not None:
            predicted = self.predicted_tokens(fingerprint, decision, outcome.replica)
            self.accuracy.record(outcome.replica, self.source_of(decision), predicted, outcome.cached_tokens)
        if outcome.cached_tokens is not None:
            self.metrics.reported_cached.inc(outcome.cached_tokens)
        if outcome.prompt_tokens is not None:
            self.metrics.reported_prompt.inc(outcome.prompt_tokens)
