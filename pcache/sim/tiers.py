"""The KV tiers under a simulated replica's GPU cache: its own host-DRAM tier and a shared pool.

Modelled on what the engines do. vLLM's native CPU offloading (``OffloadingConnector``) and LMCache
write every full block the GPU computes through to host memory / the remote store (they do not wait
for GPU eviction), keep it there under LRU at their own capacity, and on a new request look up the
blocks that follow the GPU's prefix hit: loaded blocks become GPU blocks again, and count as
*external* hits (``vllm:external_prefix_cache_hits``), split by tier in
``vllm:prompt_tokens_cached_by_source{source=host|external_unspecified}`` (vLLM's
``CacheHitSource``: ``host`` is offloaded DRAM, ``external_unspecified`` a remote store such as
LMCache's or Mooncake's). A lookup walks GPU, then host, then pool, each continuing where the
nearer tier stopped. Loading costs time: per token for host DRAM (PCIe), and a per-request latency
plus per token for the pool (a network round trip).

The host tier is one replica's memory (a restart empties it); the pool is one object shared by
every replica of a ``pcache sim`` process and outlives their restarts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["BlockStore", "PoolSpec", "SharedPool", "TierHit", "TierLookup"]


class BlockStore:
    """An LRU set of block hashes with a fixed capacity; tells ``on_stored``/``on_removed``."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("a tier's capacity must be at least one block")
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.evictions = 0
        self.on_removed: Callable[[list[int]], None] | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    def contains(self, block_hash: int) -> bool:
        """Whether the block is held (without refreshing it)."""
        return block_hash in self._blocks

    def store(self, hashes: Sequence[int]) -> list[int]:
        """Write blocks through (refreshing those already held); returns the newly stored ones."""
        blocks = self._blocks
        new: list[int] = []
        for block_hash in hashes:
            if block_hash in blocks:
                blocks.move_to_end(block_hash)
            else:
                blocks[block_hash] = None
                new.append(block_hash)
        victims: list[int] = []
        while len(blocks) > self.capacity_blocks:
            victim, _ = blocks.popitem(last=False)
            victims.append(victim)
        self.evictions += len(victims)
        if victims and self.on_removed is not None:
            self.on_removed(victims)
        return [block_hash for block_hash in new if block_hash in blocks]

    def run_from(self, hashes: Sequence[int], start: int, stop: int) -> int:
        """How many consecutive blocks ``hashes[start:stop]`` holds from ``start``; refreshes them."""
        blocks = self._blocks
        count = 0
        for block_hash in hashes[start:stop]:
            if block_hash not in blocks:
                break
            blocks.move_to_end(block_hash)
            count += 1
        return count

    def clear(self) -> list[int]:
        """Drop everything; returns what was held."""
        dropped = list(self._blocks)
        self._blocks.clear()
        return dropped


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A fleet-wide shared pool: capacity, a fixed latency per loading request, and a cost per token."""

    blocks: int
    latency: float = 0.010  # seconds per request that loads from the pool (10-40 ms in practice)
    per_token: float = 0.000002  # seconds per token loaded


class SharedPool:
    """The store every replica of one simulated fleet writes through to and loads from."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.store = BlockStore(spec.blocks)


@dataclass(frozen=True, slots=True)
class TierHit:
    """Where a request's cached prompt blocks came from, and what loading them cost."""

    device_blocks: int
    host_blocks: int
    pool_blocks: int
    block_size: int
    load_seconds: float

    @property
    def device_tokens(self) -> int:
        return self.device_blocks * self.block_size

    @property
    def host_tokens(self) -> int:
        return self.host_blocks * self.block_size

    @property
    def pool_tokens(self) -> int:
        return self.pool_blocks * self.block_size

    @property
    def tokens(self) -> int:
        return self.device_tokens + self.host_tokens + self.pool_tokens


class TierLookup:
    """One replica's view of the tiers under its GPU cache (either may be absent)."""

    def __init__(
        self,
        host: BlockStore | None,
        host_per_token: float,
        pool: SharedPool | None,
        block_size: int,
    ) -> None:
        self.host = host
        self.host_per_token = host_per_token
        self.pool = pool
        self.block_size = block_size

    @property
    def external(self) -> bool:
        """Whether a KV connector is configured (vLLM counts external queries only then)."""
        return self.host is not None or self.pool is not None

    def lookup(self, hashes: Sequence[int], device_blocks: int, prompt_tokens: int) -> TierHit:
        """Extend a GPU hit of ``device_blocks`` from host then pool, capped like the GPU's lookup
        (at least one prompt token is computed)."""
        size = self.block_size
        cap = max(prompt_tokens - 1, 0) // size
        host_blocks = pool_blocks = 0
        position = device_blocks
        if self.host is not None and position < cap:
            host_blocks = self.host.run_from(hashes, position, cap)
            position += host_blocks
        load = host_blocks * size * self.host_per_token
        if self.pool is not None and position < cap:
            pool_blocks = self.pool.store.run_from(hashes, position, cap)
            if pool_blocks:
                spec = self.pool.spec
                load += spec.latency + pool_blocks * size * spec.per_token
        return TierHit(device_blocks, host_blocks, pool_blocks, size, load)

    def write_through(self, hashes: Sequence[int]) -> list[int]:
        """Store computed full blocks in the host tier and the pool; returns those new on the host."""
        if self.pool is not None:
            self.pool.store.store(hashes)
        return self.host.store(hashes) if self.host is not None else []
