"""A vLLM-style block prefix cache: chained block hashes, refcounts, LRU eviction of free blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Allocation", "PrefixCache"]


@dataclass(slots=True)
class Allocation:
    """The blocks one running request holds.

    ``hashed`` are shared, content-addressed blocks (prefix hits, then the request's own full prompt
    blocks once its prefill is committed, then full blocks of generated tokens); ``anonymous`` counts
    the rest (partial and not yet full decode blocks). ``committed`` is how many leading blocks of
    the request's sequence have been through the cache (hit or registered).
    """

    prompt_hashes: list[int]
    hit_blocks: int
    hit_tokens: int
    hashed: list[int] = field(default_factory=list)
    anonymous: int = 0
    released: bool = False
    committed: int = 0


class PrefixCache:
    """Fixed-capacity block pool with prefix caching, modelled on vLLM's KV cache manager.

    A request's lookup matches the longest run of its chained block hashes already cached, capped so
    at least one prompt token is always computed (hits <= prompt length - 1, block aligned). Blocks
    whose refcount drops to zero stay cached but become evictable, least recently used first.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refcount: dict[int, int] = {}  # every cached block hash -> refcount
        self._evictable: OrderedDict[int, None] = OrderedDict()  # refcount 0, oldest first
        self._anonymous = 0
        self.evictions = 0
        # Told the hashes of blocks that left the cache (evicted or reset): the KV events' BlockRemoved.
        self.on_removed: Callable[[list[int]], None] | None = None

    @property
    def used_blocks(self) -> int:
        """Blocks held by running requests (what vLLM reports as KV cache usage)."""
        return len(self._refcount) - len(self._evictable) + self._anonymous

    @property
    def cached_blocks(self) -> int:
        """Blocks that carry a prefix hash, held or evictable."""
        return len(self._refcount)

    @property
    def usage(self) -> float:
        """Fraction of the pool held by running requests, 0..1."""
        return self.used_blocks / self.num_blocks

    def contains(self, block_hash: int) -> bool:
        """Whether a block with this hash is cached (held or evictable)."""
        return block_hash in self._refcount

    def blocks_needed(self, total_tokens: int) -> int:
        """Blocks a request of ``total_tokens`` (prompt + max generated) occupies."""
        return -(-total_tokens // self.block_size)

    def match(self, prompt_hashes: list[int], prompt_tokens: int) -> int:
        """Number of leading prompt blocks a lookup would hit now (capped at prompt length - 1)."""
        cap = max(prompt_tokens - 1, 0) // self.block_size
        hits = 0
        for block_hash in prompt_hashes[:cap]:
            if block_hash not in self._refcount:
                break
            hits += 1
        return hits

    def allocate(self, prompt_hashes: list[int], prompt_tokens: int, total_tokens: int) -> Allocation | None:
        """Reserve blocks for a request, reusing cached prefix blocks; ``None`` when it does not fit now."""
        hit_blocks = self.match(prompt_hashes, prompt_tokens)
        hit_hashes = prompt_hashes[:hit_blocks]
        new_blocks = max(self.blocks_needed(total_tokens) - hit_blocks, 0)
        revived = sum(1 for block_hash in hit_hashes if block_hash in self._evictable)
        if self.used_blocks + revived + new_blocks > self.num_blocks:
            return None
        for block_hash in hit_hashes:
            self._refcount[block_hash] += 1
            self._evictable.pop(block_hash, None)
        free = self.num_blocks - len(self._refcount) - self._anonymous
        victims: list[int] = []
        while free < new_blocks:
            victim, _ = self._evictable.popitem(last=False)
            del self._refcount[victim]
            victims.append(victim)
            free += 1
        self.evictions += len(victims)
        if victims and self.on_removed is not None:
            self.on_removed(victims)
        self._anonymous += new_blocks
        return Allocation(
            prompt_hashes=prompt_hashes,
            hit_blocks=hit_blocks,
            hit_tokens=hit_blocks * self.block_size,
            hashed=list(hit_hashes),
            anonymous=new_blocks,
            committed=hit_blocks,
        )

    def commit(self, allocation: Allocation, sequence_hashes: list[int] | None = None) -> list[int]:
        """Register the request's computed full blocks so later requests can hit them.

        By default its prompt blocks (after prefill). ``sequence_hashes`` are the chained hashes of
        the full blocks of prompt + generated tokens computed so far: like vLLM V1, a block of
        generated tokens is cached once it is full, so the next turn of a conversation, whose prompt
        repeats this reply, hits it on this replica.

        Returns the positions (in the sequence) of the blocks it newly cached: the KV events'
        BlockStored.
        """
        if allocation.released:
            return []
        hashes = allocation.prompt_hashes if sequence_hashes is None else sequence_hashes
        stored: list[int] = []
        for position in range(allocation.committed, len(hashes)):
            block_hash = hashes[position]
            if block_hash in self._refcount or allocation.anonymous == 0:
                continue  # another request registered the same content first; ours stays private
            self._refcount[block_hash] = 1
            allocation.hashed.append(block_hash)
            allocation.anonymous -= 1
            self._anonymous -= 1
            stored.append(position)
        allocation.committed = max(allocation.committed, len(hashes))
        return stored

    def release(self, allocation: Allocation) -> None:
        """Return a finished request's blocks; shared ones stay cached as evictable.

        Blocks are freed tail first (like vLLM), so a prefix's last blocks are evicted before its first.
        """
        if allocation.released:
            return
        allocation.released = True
        for block_hash in reversed(allocation.hashed):
            count = self._refcount[block_hash] - 1
            self._refcount[block_hash] = count
            if count == 0:
                self._evictable[block_hash] = None
        self._anonymous -= allocation.anonymous
        allocation.hashed = []
        allocation.anonymous = 0

    def reset(self) -> bool:
        """Drop every evictable cached block (``/reset_prefix_cache``); False if requests hold blocks."""
        dropped = list(self._evictable)
        for block_hash in dropped:
            del self._refcount[block_hash]
        self._evictable.clear()
        if dropped and self.on_removed is not None:
            self.on_removed(dropped)
        return self.used_blocks == 0
