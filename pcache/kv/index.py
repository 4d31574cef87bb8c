"""The precise cache index: what each replica's engine says it holds, from its KV events.

Blocks are keyed by a chain over the engine's own token ids (``chain_keys``): block ``k``'s key
hashes its ``block_size`` token ids with block ``k - 1``'s key as seed. A BlockStored event's key
follows from its parent's key and its tokens, so the index needs neither the engine's hash
algorithm (sha256, sha256_cbor, a seeded builtin hash) nor its seed, and a request tokenized with
the engine's tokenizer looks itself up with the same keys. Engine hashes are kept only to map
BlockRemoved back to keys. A block whose parent the index never saw (history lost before a
replay could recover it), or whose hash covers extra keys (multimodal inputs, a cache salt), is
not indexed: the router could not produce its key, and guessing would overstate a match.

Each replica's blocks are written by its subscriber thread and read by the routing policy on the
event loop: readers only test membership, and a forget swaps in fresh maps, so neither takes a lock.
Memory is bounded per replica (``max_blocks``; the oldest entries go first if removals were lost).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import xxhash

from pcache.kv.events import AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, KVEvent

__all__ = ["DEFAULT_MEDIUM_WEIGHTS", "PreciseMatch", "ReplicaBlocks", "chain_keys", "root_key"]

DEFAULT_MEDIUM_WEIGHTS: Mapping[str, float] = {"GPU": 1.0, "CPU": 0.8}  # llm-d's defaults
_ROOT = 0x6A09E667F3BCC908  # the key before a sequence's first block


def root_key(lora: str | int | None = None) -> int:
    """The parent key of a sequence's first block: one per LoRA adapter, the base model's otherwise."""
    if lora is None:
        return _ROOT
    return xxhash.xxh3_64_intdigest(str(lora).encode("utf-8"), seed=_ROOT)


def chain_keys(token_ids: Sequence[int], block_size: int, parent: int = _ROOT) -> list[int]:
    """Chained keys of the full ``block_size``-token blocks of ``token_ids`` (a partial tail has none)."""
    keys: list[int] = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = xxhash.xxh3_64_intdigest(
            array("q", token_ids[start : start + block_size]).tobytes(), seed=parent
        )
        keys.append(parent)
    return keys


@dataclass(frozen=True, slots=True)
class PreciseMatch:
    """A request's leading blocks held by one replica: how many, tokens per medium, weighted tokens."""

    blocks: int
    block_size: int
    tokens_by_medium: Mapping[str, int] = field(default_factory=dict)
    weighted_tokens: float = 0.0

    @property
    def tokens(self) -> int:
        return self.blocks * self.block_size

    def cached_tokens(self, prompt_tokens: int) -> int:
        """What the engine will report cached: full blocks, at least one prompt token computed."""
        return min(self.blocks, max(prompt_tokens - 1, 0) // self.block_size) * self.block_size


class ReplicaBlocks:
    """One replica's cached blocks as its engine reported them, with the medium of each."""

    def __init__(self, max_blocks: int = 1_000_000) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be positive")
        self.max_blocks = max_blocks
        self.block_size: int | None = None
        self._media: dict[int, frozenset[str]] = {}  # chain key -> media holding the block
        self._keys: dict[BlockHash, int] = {}  # engine block hash -> chain key
        self._hashes: dict[int, BlockHash] = {}  # chain key -> engine block hash (to trim both)
        self._held: Counter[str] = Counter()  # blocks per medium
        self.unplaced = 0  # stored blocks not indexed (unknown parent, extra keys)
        self.trimmed = 0  # blocks dropped to stay within max_blocks
        self.removed = 0  # BlockRemoved entries applied (evictions the engine reported)

    def __len__(self) -> int:
        return len(self._media)

    def held_blocks(self) -> dict[str, int]:
        """Blocks held per medium (a block offloaded to CPU and still on GPU counts in both)."""
        return {medium: count for medium, count in self._held.items() if count > 0}

    def apply(self, events: Iterable[KVEvent]) -> None:
        """Apply one batch's events in order."""
        for event in events:
            if isinstance(event, BlockStored):
                self._stored(event)
            elif isinstance(event, BlockRemoved):
                self._removed(event.block_hashes, event.medium or "GPU")
            elif isinstance(event, AllBlocksCleared):
                self.clear()

    def clear(self) -> None:
        """Forget everything (the engine restarted or cleared its cache)."""
        self._media, self._keys, self._hashes, self._held = {}, {}, {}, Counter()

    def match(self, keys: Sequence[int], weights: Mapping[str, float]) -> PreciseMatch:
        """The leading ``keys`` this replica holds; each block credited at its best medium's weight."""
        size = self.block_size or 0
        media = self._media
        by_medium: Counter[str] = Counter()
        weighted = 0.0
        depth = 0
        for key in keys:
            held = media.get(key)
            if not held:
                break
            best = max(held, key=lambda m: weights.get(m, 0.0))
            by_medium[best] += size
            weighted += weights.get(best, 0.0) * size
            depth += 1
        return PreciseMatch(depth, size, dict(by_medium), weighted)

    def _stored(self, event: BlockStored) -> None:
        size = event.block_size
        if self.block_size != size:
            if self.block_size is not None:
                self.clear()  # a different block size: an engine restarted with other settings
            self.block_size = size
        medium = event.medium or "GPU"
        if event.parent_block_hash is None:
            parent: int | None = root_key(event.lora_name or event.lora_id)
        else:
            parent = self._keys.get(event.parent_block_hash)
        extra = event.extra_keys or ()
        tokens = event.token_ids
        for index, block_hash in enumerate(event.block_hashes):
            if parent is None or (index < len(extra) and extra[index]):
                parent = None  # this block and those after it chain from a block we cannot key
                self.unplaced += 1
                continue
            block_tokens = tokens[index * size : (index + 1) * size]
            if len(block_tokens) < size:
                self.unplaced += 1
                parent = None
                continue
            key = chain_keys(block_tokens, size, parent)[0]
            self._keys[block_hash] = key
            self._hashes[key] = block_hash
            held = self._media.get(key, frozenset())
            if medium not in held:
                self._media[key] = held | {medium}
                self._held[medium] += 1
            parent = key
        self._trim()

    def _removed(self, hashes: Iterable[BlockHash], medium: str) -> None:
        for block_hash in hashes:
            key = self._keys.get(block_hash)
            if key is None:
                continue
            held = self._media.get(key, frozenset())
            if medium not in held:
                continue
            self._held[medium] -= 1
            self.removed += 1
            left = held - {medium}
            if left:
                self._media[key] = left
            else:
                del self._media[key]
                del self._keys[block_hash]
                self._hashes.pop(key, None)

    def _trim(self) -> None:
        media = self._media
        while len(media) > self.max_blocks:
            key = next(iter(media))  # the oldest stored
            for medium in media.pop(key):
                self._held[medium] -= 1
            block_hash = self._hashes.pop(key, None)
            if block_hash is not None:
                self._keys.pop(block_hash, None)
            self.trimmed += 1
