"""The Fingerprint: the only thing a routing policy sees of a request.

Built once per request by :mod:`pcache.prompt` (live traffic) or by :mod:`pcache.replay` (from a
trace's ``hash_ids``), so live routing and replay run the same policy code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcache.kv.tokens import EngineTokens

__all__ = ["Fingerprint", "SessionSource"]


class SessionSource(StrEnum):
    """Where a fingerprint's session key came from."""

    HEADER = "header"  # a configured header such as x-session-id
    USER = "user"  # the OpenAI ``user`` field
    DERIVED = "derived"  # hashed from the conversation's first turns / leading blocks
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A request as routing sees it.

    ``blocks`` are chained 64-bit hashes of fixed-size chunks of the rendered prompt: two prompts
    share their first k hashes exactly when they share their first k chunks. ``block_tokens`` is the
    chunk size in tokens (an estimate for live traffic, exact for traces), used to weight hits.
    ``tier1`` names the matched Tier-1 prefix, if any; ``tier1_blocks`` is how many leading blocks it
    covers. ``engine_tokens`` is the prompt in the serving engine's own token ids, when the router
    could get them: the precise index matches those against the engines' KV events.
    """

    blocks: tuple[int, ...]
    session: str | None
    prompt_tokens: int
    tier1: str | None = None
    tier1_blocks: int = 0
    block_tokens: int = 64
    session_source: SessionSource = SessionSource.NONE
    engine_tokens: EngineTokens | None = None
    prompt_chars: int = 0  # characters of the rendered prompt (0: unknown, e.g. a replayed trace)

    def tokens_in(self, blocks: int) -> int:
        """Prompt tokens covered by the first ``blocks`` blocks (the last block may be partial)."""
        return min(blocks * self.block_tokens, self.prompt_tokens)
