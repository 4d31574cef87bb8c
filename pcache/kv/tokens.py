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

    __slots__ = ("_keys", "source", "token_ids")

    def __init__(self, token_ids: Sequence[int], source: str) -> None:
        self.token_ids = tuple(token_ids)
        self.source = source  # "tokenize" (the engine's endpoint) or "tokenizer" (a local one)
        self._keys: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return f"EngineTokens({len(self.token_ids)} tokens, source={self.source!r})"

    def keys(self, block_size: int) -> list[int]:
        """The chain keys of the full blocks at ``block_size`` (cached)."""
        keys = self._keys.get(block_size)
        if keys is None:
            keys = self._keys[block_size] = chain_keys(self.token_ids, block_size)
        return keys
