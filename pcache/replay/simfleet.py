"""The replayer's simulated fleet: per replica a finite LRU block cache and a prefill queue.

Defaults model an 8B model on one H100: about 20k prompt tokens/s of prefill plus about 20 ms fixed
per request, room for about 450k tokens of KV cache, and decode at about 50 tokens/s per request.
A request's time to first token is its wait in the replica's FIFO prefill queue plus the prefill of
its uncached tokens. Load, as a router sees it, is the requests in flight (queued, prefilling or
decoding) at the moment a new one arrives.

Optionally a KV pool the replicas share (``pool_tokens`` > 0), as LMCache or Mooncake Store give a
vLLM fleet: every block a replica computes is written through to it (LRU at its capacity), and a
request loads the blocks it holds beyond the replica's own cache instead of prefilling them, for the
pool's round trip (``pool_latency_s``) plus ``pool_tokens_per_s`` of transfer. The transfer is not
compute: it delays only its own request (which starts prefill once its KV arrived), not the queue.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

from pcache.fleet_view import FleetView, ReplicaState, ReplicaView

__all__ = ["POOL_COST_FACTOR", "Served", "ServiceModel", "SimulatedFleet", "SimulatedReplica"]

# A load from the pool is on its request's critical path in full, while ``tiered`` takes any candidate
# within ``1 + cost_eps`` of the cheapest (and the least loaded first): at the load's bare cost it
# traded GPU hits for pool loads and lost TTFT p90 on the gsp traces at 4 replicas (47 ms against
# 36 and 45 ms). Three times the bare cost keeps every measured p90 at or below tier-blind's
# (bench/tiers.py; x2 still lost 1 ms on gsp_default).
POOL_COST_FACTOR = 3.0


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """How fast a simulated replica works, and how much it can cache."""

    prefill_tokens_per_s: float = 20_000.0
    fixed_s: float = 0.020
    decode_s_per_token: float = 0.020
    cache_tokens: int = 450_000
    block_tokens: int = 512
    pool_tokens: int = 0  # a KV pool shared by the replicas (0 = none)
    pool_latency_s: float = 0.010
    pool_tokens_per_s: float = 200_000.0

    @property
    def cache_blocks(self) -> int:
        return max(1, self.cache_tokens // self.block_tokens)

    @property
    def pool_blocks(self) -> int:
        return self.pool_tokens // self.block_tokens

    def tier_aware_params(self) -> dict[str, float]:
        """``tiered``'s pool parameters for this fleet: the pool's capacity, and its load costs (per
        token against prefill, the round trip in prompt tokens of prefill) times ``POOL_COST_FACTOR``."""
        per_token = min(1.0, POOL_COST_FACTOR * self.prefill_tokens_per_s / self.pool_tokens_per_s)
        return {
            "pool_tokens": self.pool_tokens,
            "pool_weight": 1.0 - per_token,
            "pool_latency_tokens": POOL_COST_FACTOR * self.pool_latency_s * self.prefill_tokens_per_s,
        }


@dataclass(frozen=True, slots=True)
class Served:
    """What happened to one request on its replica."""

    cached_tokens: int
    ttft_s: float
    finish_s: float  # when the request leaves the replica (last output token)
    pool_tokens: int = 0  # of ``cached_tokens``, those loaded from the shared pool


class SimulatedReplica:
    """One replica: an LRU cache of block hashes, a FIFO prefill queue, and requests in flight."""

    __slots__ = ("_cache", "_capacity", "_in_flight", "_pool", "_prefill_free_at", "model", "name")

    def __init__(self, name: str, model: ServiceModel, pool: OrderedDict[int, None] | None = None) -> None:
        self.name = name
        self.model = model
        self._pool = pool
        self._capacity = model.cache_blocks
        self._cache: OrderedDict[int, None] = OrderedDict()
        self._prefill_free_at = 0.0
        self._in_flight: list[float] = []  # heap of completion times

    def load(self, now: float) -> int:
        """Requests still in flight at ``now``."""
        in_flight = self._in_flight
        while in_flight and in_flight[0] <= now:
            heapq.heappop(in_flight)
        return len(in_flight)

    def pending_tokens(self, now: float) -> int:
        """Prompt tokens (and fixed costs, in tokens) still to prefill ahead of a new request."""
        return round(max(0.0, self._prefill_free_at - now) * self.model.prefill_tokens_per_s)

    def cached_prefix(self, blocks: tuple[int, ...]) -> int:
        """How many leading blocks are in the cache (without touching it)."""
        count = 0
        for block in blocks:
            if block not in self._cache:
                break
            count += 1
        return count

    def serve(self, now: float, blocks: tuple[int, ...], input_tokens: int, output_tokens: int) -> Served:
        """Queue a request: look up its cached prefix, prefill the rest, cache every block."""
        model = self.model
        cached_blocks = self.cached_prefix(blocks)
        cached = min(cached_blocks * model.block_tokens, input_tokens)
        pool = self._pool
        pooled = 0
        load_s = 0.0
        if pool is not None:
            depth = cached_blocks
            for block in blocks[cached_blocks:]:
                if block not in pool:
                    break
                depth += 1
            pooled = min(depth * model.block_tokens, input_tokens) - cached
            if pooled > 0:
                load_s = model.pool_latency_s + pooled / model.pool_tokens_per_s
        start = max(now + load_s, self._prefill_free_at)
        done = start + model.fixed_s + (input_tokens - cached - pooled) / model.prefill_tokens_per_s
        self._prefill_free_at = done
        finish = done + output_tokens * model.decode_s_per_token
        heapq.heappush(self._in_flight, finish)

        cache = self._cache
        for block in blocks:
            if block in cache:
                cache.move_to_end(block)
            else:
                cache[block] = None
        while len(cache) > self._capacity:
            cache.popitem(last=False)
        if pool is not None:
            for block in blocks:
                if block in pool:
                    pool.move_to_end(block)
                else:
                    pool[block] = None
            while len(pool) > model.pool_blocks:
                pool.popitem(last=False)
        return Served(cached + pooled, done - now, finish, pooled)


class SimulatedFleet:
    """Named simulated replicas in a stable order; builds the :class:`FleetView` a policy reads."""

    def __init__(self, replicas: int, model: ServiceModel | None = None) -> None:
        self.model = model or ServiceModel()
        self.pool: OrderedDict[int, None] | None = OrderedDict() if self.model.pool_blocks else None
        self.replicas: dict[str, SimulatedReplica] = {}
        self.removed: dict[str, SimulatedReplica] = {}
        self._next = 1
        for _ in range(replicas):
            self.add()

    def add(self) -> str:
        """Add a replica with an empty cache; returns its name."""
        name = f"r{self._next}"
        self._next += 1
        self.replicas[name] = SimulatedReplica(name, self.model, self.pool)
        return name

    def remove(self) -> str:
        """Remove the newest replica (its requests in flight still finish); returns its name."""
        if len(self.replicas) <= 1:
            raise ValueError("cannot remove the last replica")
        name = next(reversed(self.replicas))
        self.removed[name] = self.replicas.pop(name)
        return name

    def view(self, now: float) -> FleetView:
        capacity = self.model.cache_tokens
        return FleetView(
            tuple(
                ReplicaView(
                    name,
                    ReplicaState.HEALTHY,
                    replica.load(now),
                    cache_capacity_tokens=capacity,
                    pending_tokens=replica.pending_tokens(now),
                )
                for name, replica in self.replicas.items()
            )
        )
