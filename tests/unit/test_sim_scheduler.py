"""Scheduling and the TTFT model of one simulated engine, in process (real asyncio, no HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from pcache.sim.cache import PrefixCache
from pcache.sim.config import FaultSettings, ReplicaSpec, Timing
from pcache.sim.replica import EngineRestarted, SimReplica
from pcache.sim.scheduler import Scheduler


def hashes(tag: int, blocks: int) -> list[int]:
    return [tag * 1000 + index for index in range(blocks)]


async def test_at_most_max_num_seqs_run_and_the_rest_wait_in_order() -> None:
    scheduler = Scheduler(PrefixCache(100, 16), max_num_seqs=2)
    first = await scheduler.admit(hashes(1, 1), 16, 17)
    await scheduler.admit(hashes(2, 1), 16, 17)
    third = asyncio.create_task(scheduler.admit(hashes(3, 1), 16, 17))
    fourth = asyncio.create_task(scheduler.admit(hashes(4, 1), 16, 17))
    await asyncio.sleep(0)
    assert (scheduler.running, scheduler.waiting) == (2, 2)
    scheduler.finish(first)
    await asyncio.sleep(0)
    assert third.done() and not fourth.done()
    assert (scheduler.running, scheduler.waiting) == (2, 1)
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    assert scheduler.waiting == 0


async def test_a_request_that_does_not_fit_blocks_the_queue_head() -> None:
    scheduler = Scheduler(PrefixCache(10, 16), max_num_seqs=8)
    big = await scheduler.admit(hashes(1, 6), 96, 128)  # 8 of 10 blocks
    blocked = asyncio.create_task(scheduler.admit(hashes(2, 3), 48, 64))  # needs 4
    small = asyncio.create_task(scheduler.admit(hashes(3, 0), 1, 2))  # would fit, but FIFO
    await asyncio.sleep(0)
    assert not blocked.done() and not small.done()
    scheduler.finish(big)
    await asyncio.sleep(0)
    assert blocked.done() and small.done()


def spec(**timing: float) -> ReplicaSpec:
    return ReplicaSpec(name="r1", num_gpu_blocks=1000, timing=Timing(**timing))


async def test_ttft_grows_with_uncached_tokens_and_a_cached_prefix_cuts_it() -> None:
    replica = SimReplica(spec(t0=0.001, per_prompt_token=0.0001, inter_token=0.0))
    prompt = "x" * 4 * 800  # 800 tokens: 80 ms uncached
    async with replica.generation(prompt, 2) as cold:
        await cold.prefill()
        await cold.complete()
    async with replica.generation(prompt, 2) as warm:
        await warm.prefill()
        await warm.complete()
    assert (cold.cached_tokens, warm.cached_tokens) == (0, 784)
    assert cold.ttft >= 0.08
    assert warm.ttft < cold.ttft / 2


async def test_prompt_compute_is_serialised_so_concurrent_misses_delay_each_other() -> None:
    replica = SimReplica(spec(t0=0.0, per_prompt_token=0.0001, inter_token=0.0))

    async def one(tag: str) -> float:
        async with replica.generation(tag * 4 * 500, 1) as generation:  # 500 tokens: 50 ms of compute
            await generation.prefill()
        return generation.ttft

    ttfts = sorted(await asyncio.gather(one("a"), one("b")))
    assert ttfts[0] >= 0.05
    assert ttfts[1] >= 0.1


async def test_slow_factor_scales_the_latency_model() -> None:
    replica = SimReplica(spec(t0=0.02, per_prompt_token=0.0, inter_token=0.0))
    replica.set_faults(FaultSettings(slow_factor=3.0))
    async with replica.generation("hello", 1) as generation:
        await generation.prefill()
    assert generation.ttft >= 0.06


async def test_restart_fails_in_flight_requests_and_empties_the_cache() -> None:
    replica = SimReplica(spec(t0=0.0, per_prompt_token=0.0, inter_token=0.01))
    prompt = "y" * 4 * 64
    async with replica.generation(prompt, 1) as generation:
        await generation.prefill()
    assert replica.cache.cached_blocks == 4
    with pytest.raises(EngineRestarted):
        async with replica.generation(prompt, 50) as streaming:
            await streaming.prefill()
            async for _ in streaming.stream():
                replica.restart()
    assert replica.cache.cached_blocks == 0
    assert replica.restarts == 1
    assert b"vllm:prefix_cache_queries_total" in replica.metrics.render()
    assert b'prefix_cache_queries_total{engine="0",model_name="sim-model"} 0.0' in replica.metrics.render()


def test_error_rate_draws_are_deterministic_for_a_seed() -> None:
    def draws(seed: int) -> list[bool]:
        replica = SimReplica(ReplicaSpec(name="r1", seed=seed, faults=FaultSettings(error_rate=0.5)))
        return [replica.should_fail() for _ in range(32)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert 4 < sum(draws(7)) < 28
