"""The bar: at 8 replicas, ``tiered`` gets at least 3x round-robin's engine-reported prefix-cache
hit rate on a multi-session shared-prefix workload, measured from the replicas' own counters."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pcache.engines import parse_metrics
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration

MODEL = "sim-model"
# Many long shared prefixes and small caches: round-robin needs every prefix on every replica and
# thrashes; a policy that keeps each prefix (and each session) on few replicas does not.
SYSTEM_PROMPTS = [
    f"You are assistant {i} of the Initech help desk. Follow the runbook, be brief, cite tickets. " * 32
    for i in range(32)
]
SESSIONS = 64
TURNS = 3


def _session(base_url: str, index: int) -> None:
    rng = random.Random(index)
    system = SYSTEM_PROMPTS[index % len(SYSTEM_PROMPTS)]
    messages = [{"role": "system", "content": system}]
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for turn in range(TURNS):
            words = " ".join(
                rng.choice(("printer", "vpn", "laptop", "badge", "email", "quota")) for _ in range(90)
            )
            messages.append({"role": "user", "content": f"session {index} turn {turn}: {words}"})
            response = http.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": messages, "max_tokens": 24},
                headers={"x-session-id": f"session-{index}"},
            )
            response.raise_for_status()
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


def _hit_rate(sim: SimFleet, policy: str, state_dir: Path) -> float:
    for url in sim.urls.values():
        httpx.post(f"{url}/reset_prefix_cache", timeout=10).raise_for_status()
    queries_before, hits_before = _fleet_counters(sim)
    with (
        RouterProcess(replicas=sim.urls, policy=policy, state_dir=state_dir) as router,
        ThreadPoolExecutor(max_workers=12) as pool,
    ):
        list(pool.map(lambda i: _session(router.url, i), range(SESSIONS)))
    queries, hits = _fleet_counters(sim)
    return (hits - hits_before) / (queries - queries_before)


def test_tiered_hits_the_cache_at_least_three_times_as_often_as_round_robin(tmp_path: Path) -> None:
    with SimFleet(replicas=8, num_gpu_blocks=512, extra_args=("--dev-mode",)) as sim:
        round_robin = _hit_rate(sim, "round_robin", tmp_path / "rr")
        tiered = _hit_rate(sim, "tiered", tmp_path / "tiered")
    print(f"engine-reported hit rate at 8 replicas: tiered {tiered:.3f}, round_robin {round_robin:.3f}")
    assert tiered >= 3 * round_robin
