"""The simulator's KV tiers: a host-DRAM tier per replica and a pool the fleet shares."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pcache.sim.config import ConfigError, ReplicaSpec, Timing, pool_from
from pcache.sim.replica import SimReplica
from pcache.sim.tiers import BlockStore, PoolSpec, SharedPool
from pcache.sim.tokenizer import CHARS_PER_TOKEN, block_hashes

BLOCK = 16
FAST = Timing(t0=0.0, per_prompt_token=0.0, inter_token=0.0)


def text(tag: str, blocks: int) -> str:
    """``blocks`` full blocks unique to ``tag`` and one more token (so every block can hit)."""
    return "".join(f"<{tag}:{i}>".ljust(BLOCK * CHARS_PER_TOKEN, ".") for i in range(blocks)) + "abcd"


async def run(replica: SimReplica, prompt: str) -> tuple[int, float]:
    """One request; its cached tokens and its time to first token."""
    async with replica.generation(prompt, 1) as generation:
        await generation.prefill()
        await generation.complete()
    return generation.cached_tokens, generation.ttft


def samples(replica: SimReplica) -> dict[tuple[str, str], float]:
    """(sample name, source label or '') -> value of the replica's /metrics."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(replica.metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("source", ""))] = sample.value
    return out


def test_block_store_is_lru_at_its_capacity_and_reports_evictions() -> None:
    store = BlockStore(2)
    removed: list[int] = []
    store.on_removed = removed.extend
    assert store.store([1, 2]) == [1, 2]
    assert store.run_from([1, 2, 3], 0, 3) == 2  # refreshes 1 then 2
    assert store.store([3]) == [3]
    assert removed == [1]
    assert store.run_from([2, 3], 0, 2) == 2
    assert store.run_from([9, 2], 0, 2) == 0  # a run starts at its first block or not at all


async def test_a_pool_serves_a_prefix_computed_on_another_replica_and_counts_it_as_external() -> None:
    pool = SharedPool(PoolSpec(blocks=1000, latency=0.0, per_token=0.0))
    r1 = SimReplica(ReplicaSpec(name="r1", timing=FAST), pool)
    r2 = SimReplica(ReplicaSpec(name="r2", timing=FAST), pool)
    prompt = text("doc", 8)
    assert (await run(r1, prompt))[0] == 0
    assert (await run(r2, prompt))[0] == 8 * BLOCK  # from the pool
    assert (await run(r2, prompt))[0] == 8 * BLOCK  # now from r2's GPU
    values = samples(r2)
    prompt_tokens = 8 * BLOCK + 1
    assert values[("vllm:prompt_tokens_cached_by_source_total", "external_unspecified")] == 8 * BLOCK
    assert values[("vllm:prompt_tokens_cached_by_source_total", "device")] == 8 * BLOCK
    assert values[("vllm:prompt_tokens_cached_by_source_total", "host")] == 0
    assert values[("vllm:prefix_cache_hits_total", "")] == 8 * BLOCK
    assert values[("vllm:external_prefix_cache_hits_total", "")] == 8 * BLOCK
    # the connector is asked about what the GPU did not hold: all of it, then one token
    assert values[("vllm:external_prefix_cache_queries_total", "")] == prompt_tokens + 1
    by_source = sum(
        v for (name, _), v in values.items() if name == "vllm:prompt_tokens_cached_by_source_total"
    )
    local_and_external = (
        values[("vllm:prefix_cache_hits_total", "")] + values[("vllm:external_prefix_cache_hits_total", "")]
    )
    assert by_source == local_and_external  # vLLM's documented invariant


async def test_the_host_tier_brings_back_what_the_gpu_evicted() -> None:
    spec = ReplicaSpec(name="r1", timing=FAST, num_gpu_blocks=12, host_blocks=100)
    replica = SimReplica(spec)
    first, second = text("a", 8), text("b", 8)
    await run(replica, first)
    await run(replica, second)  # needs 9 blocks: evicts most of the first from the 12-block GPU
    assert not replica.cache.contains(block_hashes(first, BLOCK)[-1])  # evicted tail first
    cached, _ = await run(replica, first)
    assert cached == 8 * BLOCK
    values = samples(replica)
    assert values[("vllm:prompt_tokens_cached_by_source_total", "host")] > 0
    assert (
        values[("vllm:prompt_tokens_cached_by_source_total", "device")]
        + values[("vllm:prompt_tokens_cached_by_source_total", "host")]
        == 8 * BLOCK
    )
    # the capacity of the host tier is in cache_config_info as vLLM's num_cpu_blocks
    assert 'num_cpu_blocks="100"' in replica.metrics.render().decode()


async def test_time_to_first_token_includes_each_tiers_load_time() -> None:
    per_token = 0.0001
    timing = Timing(t0=0.0, per_prompt_token=per_token, inter_token=0.0)
    pool = SharedPool(PoolSpec(blocks=1000, latency=0.03, per_token=0.0))
    r1 = SimReplica(ReplicaSpec(name="r1", timing=timing), pool)
    r2 = SimReplica(ReplicaSpec(name="r2", timing=timing), pool)
    prompt = text("long", 20)  # 321 tokens: 32 ms to compute
    _, cold = await run(r1, prompt)
    _, pooled = await run(r2, prompt)
    assert cold >= 320 * per_token
    assert pooled >= 0.03  # the pool's round trip is paid
    _, local = await run(r2, prompt)
    assert local < 0.03  # a GPU hit pays no transfer


async def test_a_restart_empties_the_host_tier_but_not_the_shared_pool() -> None:
    pool = SharedPool(PoolSpec(blocks=1000, latency=0.0, per_token=0.0))
    replica = SimReplica(ReplicaSpec(name="r1", timing=FAST, host_blocks=100), pool)
    prompt = text("p", 4)
    await run(replica, prompt)
    replica.restart()
    assert replica.tiers.host is not None and len(replica.tiers.host) == 0
    assert (await run(replica, prompt))[0] == 4 * BLOCK
    assert (
        samples(replica)[("vllm:prompt_tokens_cached_by_source_total", "external_unspecified")] == 4 * BLOCK
    )


def test_pool_settings_are_checked() -> None:
    assert pool_from({"blocks": 10, "latency_ms": 40}, "f") == PoolSpec(10, 0.04, 0.000002)
    assert pool_from(None, "f") is None
    for bad in ({"blocks": 0}, {"blocks": 5, "latency_ms": -1}, {"blocks": 5, "size": 1}, [1]):
        with pytest.raises(ConfigError):
            pool_from(bad, "f")
