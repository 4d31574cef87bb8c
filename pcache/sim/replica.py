"""One simulated engine: prefix cache, scheduler, latency model, metrics and faults, free of HTTP."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from types import TracebackType

from pcache.kv.events import BlockHash, BlockRemoved, BlockStored, KVEvent
from pcache.sim.cache import Allocation, PrefixCache
from pcache.sim.config import FaultSettings, ReplicaSpec
from pcache.sim.kv_publisher import KvEventPublisher
from pcache.sim.metrics import RequestRecord, VllmMetrics
from pcache.sim.scheduler import Scheduler
from pcache.sim.tiers import BlockStore, SharedPool, TierHit, TierLookup
from pcache.sim.tokenizer import block_hashes, count_tokens, filler_text, token_ids

__all__ = ["EngineRestarted", "Generation", "SimReplica"]


class EngineRestarted(RuntimeError):
    """The replica restarted (or shut down) while this request was in it."""


class SimReplica:
    """The engine behind one simulated replica's HTTP server.

    ``restart()`` models a crash and restart: in-flight requests fail, the cache is empty and every
    counter starts from zero again. Under the GPU cache an optional host-DRAM tier (the replica's,
    emptied by a restart) and an optional ``pool`` shared with the fleet's other replicas
    (:mod:`pcache.sim.tiers`).
    """

    def __init__(self, spec: ReplicaSpec, pool: SharedPool | None = None) -> None:
        self.spec = spec
        self.pool = pool
        self.faults = spec.faults
        self.restarts = 0
        self._rng = random.Random(spec.seed)
        self._unstalled = asyncio.Event()
        self._apply_stall()
        self.kv_events = KvEventPublisher(spec.kv_events) if spec.kv_events is not None else None
        self._boot()

    def _boot(self) -> None:
        self.prefill_busy_until = 0.0  # perf_counter time when queued prompt compute is done
        self.cache = PrefixCache(self.spec.num_gpu_blocks, self.spec.block_size)
        host = BlockStore(self.spec.host_blocks) if self.spec.host_blocks else None
        self.tiers = TierLookup(host, self.spec.host_per_token, self.pool, self.spec.block_size)
        self.scheduler = Scheduler(self.cache, self.spec.max_num_seqs)
        scheduler, cache = self.scheduler, self.cache
        self.metrics = VllmMetrics(
            model=self.spec.model,
            block_size=self.spec.block_size,
            num_gpu_blocks=self.spec.num_gpu_blocks,
            max_model_len=self.spec.max_model_len,
            running=lambda: float(scheduler.running),
            waiting=lambda: float(scheduler.waiting),
            kv_usage=lambda: cache.usage,
            num_cpu_blocks=self.spec.host_blocks or None,
        )
        if self.kv_events is not None:
            cache.on_removed = self._publish_removed
            if host is not None:
                host.on_removed = self._publish_removed_from_host

    def _publish_removed(self, hashes: list[int], medium: str = "GPU") -> None:
        if self.kv_events is not None:
            self.kv_events.publish([BlockRemoved(block_hashes=list[BlockHash](hashes), medium=medium)])

    def _publish_removed_from_host(self, hashes: list[int]) -> None:
        self._publish_removed(hashes, "CPU")

    def cache_sequence(self, text: str, hashes: list[int], stored_on_gpu: list[int]) -> None:
        """Blocks of ``text`` were computed: publish the GPU's new ones, write every full block
        through to the host tier and the pool, and publish the host's new ones (medium ``CPU``,
        as vLLM's offloading connector does)."""
        self.publish_stored(text, hashes, stored_on_gpu)
        if not self.tiers.external:
            return
        new_on_host = set(self.tiers.write_through(hashes))
        if new_on_host:
            positions = [i for i, block_hash in enumerate(hashes) if block_hash in new_on_host]
            self.publish_stored(text, hashes, positions, "CPU")

    def publish_stored(self, text: str, hashes: list[int], positions: list[int], medium: str = "GPU") -> None:
        """Publish BlockStored for the newly cached blocks at ``positions`` of ``text``'s ``hashes``,
        one event per run of consecutive blocks (its parent the block before the run)."""
        if self.kv_events is None or not positions:
            return
        size = self.spec.block_size
        events: list[KVEvent] = []
        start = previous = positions[0]
        for position in [*positions[1:], -1]:
            if position == previous + 1:
                previous = position
                continue
            events.append(
                BlockStored(
                    block_hashes=list[BlockHash](hashes[start : previous + 1]),
                    parent_block_hash=hashes[start - 1] if start else None,
                    token_ids=token_ids(text, start * size, (previous + 1) * size, self.spec.chars_per_token),
                    block_size=size,
                    medium=medium,
                )
            )
            start = previous = position
        self.kv_events.publish(events)

    def _apply_stall(self) -> None:
        if self.faults.stall:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def set_faults(self, faults: FaultSettings) -> None:
        """Replace the fault settings (a cleared stall releases every stalled request)."""
        self.faults = faults
        self._apply_stall()

    def restart(self) -> None:
        """Crash and come back: in-flight requests fail, empty cache, counters reset."""
        self.restarts += 1
        self.scheduler.abort_all(EngineRestarted("engine restarted"))
        if self.kv_events is not None:
            self.kv_events.restart()
        self._boot()

    def shutdown(self) -> None:
        """Release stalled and queued requests so the server can stop promptly."""
        self.scheduler.abort_all(EngineRestarted("engine shutting down"))
        self._unstalled.set()
        if self.kv_events is not None:
            self.kv_events.close()

    async def wait_unstalled(self) -> None:
        """Block while the replica is stalled."""
        await self._unstalled.wait()

    def should_fail(self) -> bool:
        """Draw whether this request hits the injected error rate (deterministic for a seed)."""
        rate = self.faults.error_rate
        return rate > 0 and self._rng.random() < rate

    def generation(self, prompt: str, max_tokens: int, *, prompt_tokens: int | None = None) -> Generation:
        """Prepare a request over ``prompt``; use it as ``async with``."""
        return Generation(self, prompt, max_tokens, prompt_tokens)


class Generation:
    """One request's life in the engine: queue, prefill (TTFT), decode, release."""

    def __init__(self, replica: SimReplica, prompt: str, max_tokens: int, prompt_tokens: int | None) -> None:
        self._replica = replica
        self._scheduler = replica.scheduler
        self._metrics = replica.metrics
        self._cache = replica.cache
        per_token = replica.spec.chars_per_token
        self.prompt_tokens = prompt_tokens if prompt_tokens is not None else count_tokens(prompt, per_token)
        self.max_tokens = max_tokens
        self._prompt = prompt
        self._hashes = block_hashes(prompt, replica.spec.block_size, chars_per_token=per_token)
        self._allocation: Allocation | None = None
        self.cached_tokens = 0
        self.tier_hit: TierHit | None = None
        self.generated = 0
        self.ttft = 0.0
        self._arrival = time.perf_counter()
        self._admitted = 0.0
        self._first_token = 0.0
        self._finished = False

    @property
    def blocks_needed(self) -> int:
        """Blocks this request occupies while running."""
        return self._cache.blocks_needed(self.prompt_tokens + self.max_tokens)

    def _check_alive(self) -> None:
        if self._replica.cache is not self._cache:
            raise EngineRestarted("engine restarted")

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        allocation = self._allocation
        if allocation is None:
            return
        if self._replica.cache is not self._cache:
            self._scheduler.finish(allocation)
            return  # the engine restarted under us: its counters are gone
        self._cache_generated(allocation)
        self._scheduler.finish(allocation)
        now = time.perf_counter()
        reason = "length" if self._finished else "abort"
        first = self._first_token or now
        self._metrics.record_finished(
            RequestRecord(
                prompt_tokens=self.prompt_tokens,
                cached_tokens=self.cached_tokens,
                generation_tokens=self.generated,
                max_tokens=self.max_tokens,
                finished_reason=reason,
                queue_time=self._admitted - self._arrival,
                prefill_time=first - self._admitted,
                decode_time=now - first,
                ttft=self.ttft,
                e2e=now - self._arrival,
            )
        )

    def _cache_generated(self, allocation: Allocation) -> None:
        """Cache the full blocks of prompt + generated tokens whose KV was computed (vLLM V1 caches
        decode blocks too): every token but the last sampled one, which was never fed back."""
        if not self._first_token or self.generated < 2:
            return  # no prefill done, or no generated token computed yet
        generated = "".join(filler_text(index) for index in range(self.generated - 1))
        text = self._prompt + generated
        spec = self._replica.spec
        sequence = block_hashes(text, spec.block_size, self._hashes, spec.chars_per_token)
        self._replica.cache_sequence(text, sequence, self._cache.commit(allocation, sequence))

    async def prefill(self) -> None:
        """Wait for admission, then compute the uncached prompt tokens; ends at the first token."""
        allocation = await self._scheduler.admit(
            self._hashes, self.prompt_tokens, self.prompt_tokens + self.max_tokens
        )
        self._allocation = allocation
        self._admitted = time.perf_counter()
        hit = self._replica.tiers.lookup(self._hashes, allocation.hit_blocks, self.prompt_tokens)
        self.tier_hit = hit
        self.cached_tokens = hit.tokens
        self._metrics.record_admission(self.prompt_tokens, hit, external=self._replica.tiers.external)
        timing, slow = self._replica.spec.timing, self._replica.faults.slow_factor
        compute = (self.prompt_tokens - self.cached_tokens) * timing.per_prompt_token * slow
        # One accelerator: prompt compute is serialised across requests (a burst of cache misses
        # delays everyone's first token, which is what cache hits save); t0 overlaps. KV loaded from
        # the host tier or the pool arrives first (a transfer, not compute: it holds up no one else).
        now = time.perf_counter()
        finish = max(now + hit.load_seconds * slow, self._replica.prefill_busy_until) + compute
        self._replica.prefill_busy_until = finish
        await asyncio.sleep(finish - now + timing.t0 * slow)
        self._check_alive()
        self._replica.cache_sequence(self._prompt, self._hashes, self._cache.commit(allocation))
        self._first_token = time.perf_counter()
        self.ttft = self._first_token - self._arrival
        self._metrics.record_first_token(self.ttft)

    def _token_gap(self) -> float:
        return self._replica.spec.timing.inter_token * self._replica.faults.slow_factor

    async def stream(self) -> AsyncIterator[list[str]]:
        """Yield generated tokens at the inter-token latency, in batches of the tokens now due.

        Token ``i`` is due ``i`` inter-token gaps after the first token; a wake-up that comes late
        (a busy CPU) catches up with every token due by then, so the rate holds under load.
        """
        if self.max_tokens < 1:
            self._finished = True
            return
        self.generated = 1
        yield [filler_text(0)]
        scheduled = last_sent = self._first_token  # when the latest token was due / actually sent
        while self.generated < self.max_tokens:
            gap = self._token_gap()
            due = scheduled + gap
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self._check_alive()
            now = time.perf_counter()
            count = 1 if gap <= 0 else min(self.max_tokens - self.generated, 1 + int((now - due) / gap))
            self._metrics.record_inter_token(now - last_sent)
            self._metrics.record_inter_token(0.0, count - 1)  # caught-up tokens arrive together
            scheduled, last_sent = due + (count - 1) * gap, now
            start = self.generated
            self.generated += count
            yield [filler_text(index) for index in range(start, self.generated)]
        self._finished = True

    async def complete(self) -> str:
        """Generate every token at once (non-streamed responses) and return the text."""
        if self.max_tokens > 1:
            gap = self._token_gap()
            await asyncio.sleep(gap * (self.max_tokens - 1))
            self._check_alive()
            self._metrics.record_inter_token(gap, self.max_tokens - 1)
        self.generated = self.max_tokens
        self._finished = True
        return "".join(filler_text(index) for index in range(self.max_tokens))
