"""At 8 replicas with small caches, ``tiered``'s replicas report a higher prefix-cache hit rate than
round-robin's on a fixed multi-session shared-prefix workload, from the replicas' own counters.

How large the gap is (the project's bar: at least 3x) is a measurement: ``python bench/policy_gap.py``.
"""

from __future__ import annotations

from pathlib import Path

from pcache.testing.help_desk import measure_hit_rate
from pcache.testing.sim import SimFleet


def test_tiered_replicas_hit_the_cache_more_often_than_round_robins(tmp_path: Path) -> None:
    with SimFleet(replicas=8, num_gpu_blocks=512, extra_args=("--dev-mode",)) as sim:
        round_robin = measure_hit_rate(sim, "round_robin", tmp_path / "rr")
        tiered = measure_hit_rate(sim, "tiered", tmp_path / "tiered")
    rates = {"tiered": tiered.rate, "round_robin": round_robin.rate}
    assert tiered.queried_tokens > 0 and round_robin.queried_tokens > 0
    assert tiered.hit_tokens > round_robin.hit_tokens, rates
    assert tiered.rate > round_robin.rate, rates
