"""A request in its engine's own token ids, and the chain keys of its blocks at a block size.

Built before routing (from the engine's ``/tokenize`` or a local tokenizer) and carried on the
:class:`~pcache.fingerprint.Fingerprint`; the keys for a block size are computed once and shared by
every replica with that block size.
"""

from __future__ import annotations

from collections.abc import Sequence

from pcache.kv.index import chain_keys

__all__ = ["EngineTokens"]


class EngineTokens:
    """Token ids of one rendered prompt, as the engine that serves it counts them."""

    __slots__ = ("_keys", "_length", "source", "token_ids")

    def __init__(self, token_ids: Sequence[int], source: str) -> None:
        self.token_ids = tuple(token_ids)
        self.source = source  # "tokenize" (the engine's endpoint), "tokenizer" (a local one), "trace"
        self._keys: dict[int, list[int]] = {}
        self._length = len(self.token_ids)

    @classmethod
    def from_keys(cls, keys: Sequence[int], block_size: int, length: int) -> EngineTokens:
        """A prompt known only by its block keys at one block size (a trace's ``hash_ids``)."""
        tokens = cls((), "trace")
        tokens._keys[block_size] = list(keys)
        tokens._length = length
        return tokens

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"EngineTokens({len(self.token_ids)} tokens, source={self.source!r})"

    def keys(self, block_size: int) -> list[int]:
        """The chain keys of the full blocks at ``block_size`` (cached)."""
        keys = self._keys.get(block_size)
        if keys is None:
            # Known only by keys at another block size (a trace): no key at this one matches.
            keys = self._keys[block_size] = chain_keys(self.token_ids, block_size) if self.token_ids else []
        return keys
