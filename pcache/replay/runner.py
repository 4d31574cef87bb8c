"""Replay a trace through any set of policies, each over its own simulated fleet, in one pass.

The trace is streamed once; every record is fingerprinted once and then routed by every policy in
lockstep, so memory does not grow with the trace (beyond the bounded per-policy state) and the
policies see exactly the same work. Results per policy: token-weighted cache hit rate, TTFT
percentiles, p90 of the per-minute load imbalance (busiest replica's average requests in flight /
mean), and, with a scale event, the fraction of sessions and of prefix keys it moves: each one's
last request before the event is put to the policy (``explain``, nothing booked) with the fleet
just before and just after the change (a new replica at the fleet's mean load), in the same state
otherwise, as rendezvous hashing's "adding one replica moves 1/(N+1) of keys" is meant.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import FleetView
from pcache.kv.tokens import EngineTokens
from pcache.policy import make_policy
from pcache.policy.base import Outcome, Policy
from pcache.replay.metrics import LogHistogram, MinutePoint, MinuteWindows
from pcache.replay.precise import FleetCaches
from pcache.replay.simfleet import ServiceModel, SimulatedFleet
from pcache.replay.trace import TraceFingerprinter, TraceReader, TraceRecord, count_lines

__all__ = ["TIER_AWARE", "PolicyResult", "ReplayReport", "ScaleEvent", "run_replay"]

_SCALE = re.compile(r"^\s*(\d+(?:\.\d+)?)(%?)\s*:\s*([+-]\d+)\s*$")
_TRACKED_KEYS = 100_000  # sessions / prefix keys probed at a scale event (the most recent)


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """Add (``delta`` > 0) or remove replicas once a point of the trace is reached.

    ``"50%:+1"`` is half-way through the trace's requests; ``"6000:-1"`` is at request 6000.
    """

    at: float
    percent: bool
    delta: int

    @classmethod
    def parse(cls, spec: str) -> ScaleEvent:
        match = _SCALE.match(spec)
        if match is None or int(match.group(3)) == 0:
            raise ValueError(f"scale event {spec!r} is not like '50%:+1' or '6000:-1'")
        at = float(match.group(1))
        percent = bool(match.group(2))
        if percent and at > 100:
            raise ValueError(f"scale event {spec!r}: a percentage must be at most 100")
        return cls(at, percent, int(match.group(3)))

    def request_index(self, total: int) -> int:
        """The 0-based index of the first request routed after the event."""
        return round(total * self.at / 100) if self.percent else int(self.at)

    def __str__(self) -> str:
        at = f"{self.at:g}%" if self.percent else f"{self.at:g}"
        return f"{at}:{self.delta:+d}"


@dataclass(frozen=True, slots=True)
class PolicyResult:
    policy: str
    requests: int
    hit_rate: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    imbalance_p90: float
    unrouted: int = 0
    pool_hit_rate: float | None = None  # of hit_rate, tokens loaded from the shared pool (None: no pool)
    sessions_moved: float | None = None
    prefix_keys_moved: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    drift: dict[str, int] = field(default_factory=dict)
    timeline: list[MinutePoint] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    trace: str
    replicas: int
    requests: int
    bad_lines: int
    first_bad_line: int | None
    first_bad_problem: str | None
    scale: str | None
    scale_at_request: int | None
    elapsed_s: float
    results: list[PolicyResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Recent:
    """The last fingerprint of each session and of each prefix key (the most recent ``cap``)."""

    def __init__(self, cap: int = _TRACKED_KEYS) -> None:
        self.cap = cap
        self.sessions: OrderedDict[str, Fingerprint] = OrderedDict()
        self.prefixes: OrderedDict[int, Fingerprint] = OrderedDict()

    def add(self, fingerprint: Fingerprint, prefix_key: int) -> None:
        if fingerprint.session is not None:
            self.sessions[fingerprint.session] = fingerprint
            self.sessions.move_to_end(fingerprint.session)
            if len(self.sessions) > self.cap:
                self.sessions.popitem(last=False)
        self.prefixes[prefix_key] = fingerprint
        self.prefixes.move_to_end(prefix_key)
        if len(self.prefixes) > self.cap:
            self.prefixes.popitem(last=False)


def _moved(
    policy: Policy, probes: Iterable[Fingerprint], before: FleetView, after: FleetView
) -> float | None:
    """Fraction of probes the policy would now send elsewhere because of the membership change."""
    total = moved = 0
    for fingerprint in probes:
        total += 1
        if policy.explain(fingerprint, before).replica != policy.explain(fingerprint, after).replica:
            moved += 1
    return moved / total if total else None


class _Lane:
    """One policy with its own simulated fleet and accumulators."""

    def __init__(self, name: str, policy: Policy, replicas: int, model: ServiceModel) -> None:
        self.name = name
        self.policy = policy
        self.fleet = SimulatedFleet(replicas, model)
        self.hits = 0
        self.pool_hits = 0
        self.tokens = 0
        self.requests = 0
        self.unrouted = 0
        self.ttft = LogHistogram()
        self.minutes = MinuteWindows()
        self.reasons: Counter[str] = Counter()
        self.drift: Counter[str] = Counter()
        self.sessions_moved: float | None = None
        self.prefixes_moved: float | None = None

    def step(self, now: float, fingerprint: Fingerprint, record: TraceRecord) -> str | None:
        """Route and serve one request; the chosen replica (None if nothing was routable)."""
        view = self.fleet.view(now)
        decision = self.policy.route(fingerprint, view)
        self.reasons[decision.reason.value] += 1
        if decision.replica is None:
            self.unrouted += 1
            return None
        if decision.drift is not None:
            self.drift[decision.drift.cause.value] += 1
        served = self.fleet.replicas[decision.replica].serve(
            now, fingerprint.blocks, record.input_length, record.output_length
        )
        self.policy.observe(
            fingerprint,
            decision,
            Outcome(decision.replica, True, served.cached_tokens, record.input_length, served.ttft_s),
        )
        self.requests += 1
        self.hits += served.cached_tokens
        self.pool_hits += served.pool_tokens
        self.tokens += record.input_length
        self.ttft.add(served.ttft_s)
        members = tuple(r.name for r in view.replicas)
        self.minutes.add(
            now,
            served.finish_s,
            decision.replica,
            members,
            served.cached_tokens,
            record.input_length,
            served.ttft_s,
        )
        return decision.replica

    def scale(self, now: float, delta: int, recent: _Recent) -> None:
        """Apply a scale event, first measuring what it moves: each session's and prefix key's last
        request, asked of the policy (``explain``, nothing booked) just before and just after.

        In the after view an added replica carries the fleet's mean load and queue, as it will once
        it has taken its share: an idle newcomer would otherwise win every load comparison of the
        probes, which are asked all at once and book nothing.
        """
        before = self.fleet.view(now)
        for _ in range(abs(delta)):
            if delta > 0:
                self.fleet.add()
            else:
                self.fleet.remove()
        after = self.fleet.view(now)
        old = {r.name for r in before.replicas}
        if any(r.name not in old for r in after.replicas):
            load = round(sum(r.load for r in before.replicas) / len(before.replicas))
            pending = round(sum(r.pending_tokens for r in before.replicas) / len(before.replicas))
            after = FleetView(
                tuple(
                    r if r.name in old else dataclasses.replace(r, load=load, pending_tokens=pending)
                    for r in after.replicas
                )
            )
        self.sessions_moved = _moved(self.policy, recent.sessions.values(), before, after)
        self.prefixes_moved = _moved(self.policy, recent.prefixes.values(), before, after)

    def result(self) -> PolicyResult:
        self.minutes.close()
        return PolicyResult(
            policy=self.name,
            requests=self.requests,
            hit_rate=self.hits / self.tokens if self.tokens else 0.0,
            ttft_p50_s=self.ttft.quantile(0.5),
            ttft_p90_s=self.ttft.quantile(0.9),
            ttft_p99_s=self.ttft.quantile(0.99),
            imbalance_p90=self.minutes.imbalance_p90(),
            unrouted=self.unrouted,
            pool_hit_rate=(
                (self.pool_hits / self.tokens if self.tokens else 0.0)
                if self.fleet.pool is not None
                else None
            ),
            sessions_moved=self.sessions_moved,
            prefix_keys_moved=self.prefixes_moved,
            reasons=dict(self.reasons),
            drift=dict(self.drift),
            timeline=self.minutes.points,
        )


TIER_AWARE = "+tiers"  # a policy name with this suffix is told the fleet's pool (``tiered+tiers``)


def _policy(name: str, params: Mapping[str, Mapping[str, Any]], model: ServiceModel) -> Policy:
    """The lane's policy; ``NAME+tiers`` is NAME given the pool's parameters (tier-aware)."""
    if name.endswith(TIER_AWARE):
        base = name.removesuffix(TIER_AWARE)
        return make_policy(
            base, **{**model.tier_aware_params(), **params.get(base, {}), **params.get(name, {})}
        )
    return make_policy(name, **params.get(name, {}))


def run_replay(
    trace: str | Path,
    policies: Sequence[str],
    replicas: int = 8,
    *,
    model: ServiceModel | None = None,
    scale: ScaleEvent | None = None,
    strict: bool = False,
    policy_params: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[int], None] | None = None,
    precise: bool = False,
) -> ReplayReport:
    """Replay ``trace`` through each named policy over ``replicas`` simulated replicas.

    Raises :class:`~pcache.policy.UnknownPolicyError` for an unknown name before reading anything,
    and :class:`~pcache.replay.trace.TraceError` for a bad line when ``strict``.
    """
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    model = model or ServiceModel()
    params = policy_params or {}
    lanes = [_Lane(name, _policy(name, params, model), replicas, model) for name in policies]
    if precise:  # beside each policy with a cache index, the same policy on the fleet's own caches
        for name in policies:
            policy = _policy(name, params, model)
            if hasattr(policy, "precise"):
                lane = _Lane(f"{name}+precise", policy, replicas, model)
                policy.precise = FleetCaches(lane.fleet)
                lanes.append(lane)
    recent = _Recent()
    if scale is not None and scale.delta < 0 and replicas + scale.delta < 1:
        raise ValueError(f"cannot scale {replicas} replicas by {scale.delta}")
    scale_index = scale.request_index(count_lines(trace)) if scale is not None else None
    reader = TraceReader(trace, strict=strict)
    fingerprinter = TraceFingerprinter(model.block_tokens)
    started = time.perf_counter()
    index = 0
    for record in reader:
        now = record.timestamp_s
        if index == scale_index and scale is not None:
            for lane in lanes:
                lane.scale(now, scale.delta, recent)
            recent = _Recent(0)
        fingerprint, prefix_key = fingerprinter.fingerprint(record)
        if precise:
            tokens = EngineTokens.from_keys(fingerprint.blocks, model.block_tokens, record.input_length)
            fingerprint = dataclasses.replace(fingerprint, engine_tokens=tokens)
        for lane in lanes:
            lane.step(now, fingerprint, record)
        if scale_index is not None and index < scale_index:
            recent.add(fingerprint, prefix_key)
        index += 1
        if progress is not None and index % 1000 == 0:
            progress(index)
    first_bad = reader.first_bad
    return ReplayReport(
        trace=str(trace),
        replicas=replicas,
        requests=index,
        bad_lines=reader.bad_lines,
        first_bad_line=first_bad.line if first_bad else None,
        first_bad_problem=first_bad.problem if first_bad else None,
        scale=str(scale) if scale is not None else None,
        scale_at_request=scale_index,
        elapsed_s=time.perf_counter() - started,
        results=[lane.result() for lane in lanes],
    )
