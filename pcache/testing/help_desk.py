"""A fixed multi-session shared-prefix workload, and the engine-reported hit rate a policy gets on it.

64 sessions of 3 chat turns over 32 long system prompts, on replicas with small caches: round-robin
needs every prefix on every replica and thrashes; a policy that keeps each prefix (and each session)
on few replicas does not. The request count is fixed (not a duration), so the comparison does not
depend on the machine's speed. Used by the functional test (tiered beats round-robin) and by
``bench/policy_gap.py`` (by how much).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from pcache.engines import parse_metrics
from pcache.testing.http import expect_ok
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

__all__ = ["HitRate", "measure_hit_rate", "run_session"]

MODEL = "sim-model"
SYSTEM_PROMPTS = [
    f"You are assistant {i} of the Initech help desk. Follow the runbook, be brief, cite tickets. " * 32
    for i in range(32)
]
SESSIONS = 64
TURNS = 3
CONCURRENCY = 12
WORDS = ("printer", "vpn", "laptop", "badge", "email", "quota")


@dataclass(frozen=True)
class HitRate:
    """Prefix-cache tokens the replicas queried and hit while one policy routed the workload."""

    policy: str
    queried_tokens: float
    hit_tokens: float

    @property
    def rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


def run_session(base_url: str, index: int) -> None:
    """One session's turns through the router, each turn carrying the conversation so far."""
    rng = random.Random(index)
    messages = [{"role": "system", "content": SYSTEM_PROMPTS[index % len(SYSTEM_PROMPTS)]}]
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for turn in range(TURNS):
            words = " ".join(rng.choice(WORDS) for _ in range(90))
            messages.append({"role": "user", "content": f"session {index} turn {turn}: {words}"})
            response = expect_ok(
                http.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": messages, "max_tokens": 24},
                    headers={"x-session-id": f"session-{index}"},
                )
            )
            messages.append(
                {"role": "assistant", "content": response.json()["choices"][0]["message"]["content"]}
            )


def _fleet_counters(sim: SimFleet) -> tuple[float, float]:
    queries = hits = 0.0
    for name in sim.urls:
        stats = parse_metrics(sim.metrics(name))
        queries += stats.prefix_queries or 0.0
        hits += stats.prefix_hits or 0.0
    return queries, hits


def measure_hit_rate(sim: SimFleet, policy: str, state_dir: Path) -> HitRate:
    """Empty every replica's cache, route the whole workload with ``policy``, read the counters.

    The simulator must run with ``--dev-mode`` (``/reset_prefix_cache`` is a development endpoint).
    """
    for url in sim.urls.values():
        expect_ok(httpx.post(f"{url}/reset_prefix_cache", timeout=10))
    queries_before, hits_before = _fleet_counters(sim)
    with (
        RouterProcess(replicas=sim.urls, policy=policy, state_dir=state_dir) as router,
        ThreadPoolExecutor(max_workers=CONCURRENCY) as pool,
    ):
        list(pool.map(lambda i: run_session(router.url, i), range(SESSIONS)))
    queries, hits = _fleet_counters(sim)
    return HitRate(policy, queries - queries_before, hits - hits_before)
