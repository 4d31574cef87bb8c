"""A shared KV pool: in the replayer's simulated fleet, and in ``tiered``'s cost when it knows the pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcache.fingerprint import Fingerprint, SessionSource
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView
from pcache.policy.base import Reason
from pcache.policy.tiered import PoolIndex, TieredPolicy
from pcache.replay import ServiceModel, SimulatedFleet, run_replay

TRACES = Path(__file__).parent.parent / "fixtures" / "traces"
POOLED = ServiceModel(
    prefill_tokens_per_s=10_000.0,
    fixed_s=0.0,
    block_tokens=100,
    pool_tokens=100_000,
    pool_latency_s=0.010,
    pool_tokens_per_s=100_000.0,
)


def test_a_replica_loads_from_the_pool_what_another_computed_paying_the_round_trip() -> None:
    fleet = SimulatedFleet(2, POOLED)
    blocks = tuple(range(10))
    first = fleet.replicas["r1"].serve(0.0, blocks, 1000, 1)
    assert (first.cached_tokens, first.pool_tokens) == (0, 0)
    assert first.ttft_s == pytest.approx(0.1)  # 1000 tokens of prefill
    other = fleet.replicas["r2"].serve(10.0, blocks, 1000, 1)
    assert (other.cached_tokens, other.pool_tokens) == (1000, 1000)
    assert other.ttft_s == pytest.approx(0.010 + 1000 / 100_000)  # round trip + transfer, no prefill
    again = fleet.replicas["r2"].serve(20.0, blocks, 1000, 1)
    assert (again.cached_tokens, again.pool_tokens, again.ttft_s) == (1000, 0, 0.0)  # now on its GPU


def test_without_a_pool_nothing_is_loaded() -> None:
    fleet = SimulatedFleet(2, ServiceModel(block_tokens=100))
    fleet.replicas["r1"].serve(0.0, (1, 2), 200, 1)
    assert fleet.replicas["r2"].serve(1.0, (1, 2), 200, 1).cached_tokens == 0
    assert fleet.pool is None


def test_the_pool_index_is_an_lru_of_the_pools_capacity() -> None:
    index = PoolIndex(capacity_tokens=300)
    index.insert([1, 2, 3], 100)
    assert index.depth([1, 2, 3, 4]) == 3
    index.insert([4], 100)
    assert index.depth([1, 2]) == 0 and index.depth([2, 3, 4]) == 3


def view(pending: dict[str, int]) -> FleetView:
    return FleetView(
        tuple(
            ReplicaView(name, ReplicaState.HEALTHY, 1, pending_tokens=pending.get(name, 0))
            for name in ("r1", "r2", "r3")
        )
    )


def turn(blocks: int) -> Fingerprint:
    return Fingerprint(
        blocks=tuple(range(blocks)),
        session="s",
        prompt_tokens=64 * blocks,
        session_source=SessionSource.HEADER,
    )


@pytest.mark.parametrize(("pool_tokens", "leaves"), [(0, False), (1_000_000, True)])
def test_a_session_leaves_a_busy_home_only_when_the_pool_makes_its_history_cheap_elsewhere(
    pool_tokens: int, leaves: bool
) -> None:
    policy = TieredPolicy(pool_tokens=pool_tokens, pool_latency_tokens=100.0)
    home = policy.route(turn(60), view({})).replica
    assert home is not None
    # The home's queue: more than the history's recompute elsewhere, less than twice it.
    decision = policy.route(turn(64), view({home: 6_000}))
    assert (decision.replica != home) is leaves
    if leaves:
        chosen = decision.candidates[0]
        assert dict(chosen.tokens_by_medium)["pool"] == 60 * 64  # shown in route explain
    else:
        assert decision.reason is Reason.SESSION_HOME


def test_replay_reports_pool_hits_and_tier_aware_lanes() -> None:
    model = ServiceModel(pool_tokens=2_000_000, pool_latency_s=0.010)
    report = run_replay(
        TRACES / "gsp_zipf1_head300.jsonl", ["round_robin", "tiered", "tiered+tiers"], 4, model=model
    )
    by_name = {result.policy: result for result in report.results}
    assert set(by_name) == {"round_robin", "tiered", "tiered+tiers"}
    assert by_name["round_robin"].pool_hit_rate is not None and by_name["round_robin"].pool_hit_rate > 0
    for result in report.results:
        assert result.pool_hit_rate is not None and 0 <= result.pool_hit_rate <= result.hit_rate
    plain = run_replay(TRACES / "gsp_zipf1_head300.jsonl", ["tiered"], 4)
    assert plain.results[0].pool_hit_rate is None


def test_cli_with_a_pool_compares_tier_aware_and_blind_tiered_with_hits_by_tier() -> None:
    from typer.testing import CliRunner

    from pcache_cli.main import app

    trace = str(TRACES / "gsp_zipf1_head300.jsonl")
    env = {"PCACHE_CONFIG": "", "NO_COLOR": "1", "COLUMNS": "200"}
    result = CliRunner().invoke(
        app, ["replay", trace, "-n", "4", "--pool-ms", "10", "-p", "round_robin,tiered,tiered+tiers"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "shared KV pool" in result.stdout and "POOL HIT" in result.stdout and "GPU HIT" in result.stdout
    assert "tiered+tiers" in result.stdout
    blind = CliRunner().invoke(app, ["replay", trace, "-p", "tiered+tiers"], env=env)
    assert blind.exit_code == 2 and "needs --pool-ms" in blind.stderr


def test_the_pool_demo_fleet_has_a_pool_and_a_tiered_router_that_knows_it(tmp_path: Path) -> None:
    import yaml

    from pcache.demo import DemoFleet, fleet_document, router_document
    from pcache.sim.config import ReplicaSpec, load_fleet_config
    from pcache.sim.tiers import PoolSpec
    from pcache.workload import default_prompts

    fleet = DemoFleet(pool_blocks=1000, pool_latency_ms=10.0)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet_document(fleet)))
    loaded = load_fleet_config(
        path, replicas=None, base_port=0, host="127.0.0.1", base=ReplicaSpec(name="r1")
    )
    assert loaded.pool == PoolSpec(1000, 0.010, 0.000002)
    urls = {name: f"http://127.0.0.1:{9000 + i}" for i, (name, _) in enumerate(fleet.routed)}
    tiered = router_document(fleet, urls, default_prompts())["policy"]
    assert tiered["params"]["pool_tokens"] == 16_000
    assert tiered["params"]["pool_latency_tokens"] == pytest.approx(
        3 * 10_000 / 40
    )  # 3x 10 ms at 40 µs/token
    assert "params" not in router_document(fleet, urls, default_prompts(), policy="round_robin")["policy"]
    assert "pool" not in fleet_document(DemoFleet())
