"""A deterministic stand-in tokenizer: fixed-width tokens, so prefixes share tokens exactly.

Token ``i`` of a text is its characters ``floor(i * c) .. floor((i + 1) * c)`` for ``c`` characters
per token (4 by default; real byte-level BPE tokenizers give 2.4-3.2 on English prose, so a replica
can be set to that with ``chars_per_token``). Boundaries depend only on position, so token boundaries
(and block hashes) are a pure function of the text prefix and two prompts sharing their first ``k``
tokens' characters share those tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import xxhash

__all__ = [
    "CHARS_PER_TOKEN",
    "ROOT_HASH",
    "block_hashes",
    "count_tokens",
    "filler_text",
    "token_ids",
]

CHARS_PER_TOKEN = 4
ROOT_HASH = 0x9E3779B97F4A7C15  # parent hash of the first block, like vLLM's NONE_HASH seed
_HEX = frozenset("0123456789abcdef")
_VOCAB_OFFSET = 1 << 16

_FILLER = (
    "the", "sky", "was", "red", "and", "our", "old", "dog", "ran", "far", "for", "one", "day",
    "but", "now", "sun",
)  # fmt: skip
# Every generated token is exactly CHARS_PER_TOKEN characters (a space and a three-letter word), so
# a reply rendered back into the next prompt is as many tokens as were generated, and its blocks
# hash the same as the ones the engine cached while generating it.


def _boundary(index: int, chars_per_token: float) -> int:
    """Character offset where token ``index`` starts."""
    return int(index * chars_per_token)


def count_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """Number of tokens in ``text``: the first token index whose start is at or past its end."""
    length = len(text)
    count = math.ceil(length / chars_per_token)
    while count > 0 and _boundary(count - 1, chars_per_token) >= length:
        count -= 1
    while _boundary(count, chars_per_token) < length:
        count += 1
    return count


def token_ids(
    text: str, start: int = 0, stop: int | None = None, chars_per_token: float = CHARS_PER_TOKEN
) -> list[int]:
    """The ids of tokens ``start..stop`` of ``text`` (what ``/tokenize`` and the KV events carry).

    A token of four hex digits is that number (so a prompt sent as token ids < 65536, which the
    simulator renders as four hex digits each, tokenizes back to the same ids); any other token is
    65536 plus a 31-bit hash of its characters. Equal texts give equal ids; distinct tokens collide
    with a chance of about 2^-31 per pair, the price of a stand-in vocabulary.
    """
    end = count_tokens(text, chars_per_token) if stop is None else stop
    ids: list[int] = []
    for index in range(start, end):
        chunk = text[_boundary(index, chars_per_token) : _boundary(index + 1, chars_per_token)]
        if len(chunk) == 4 and all(c in _HEX for c in chunk):
            ids.append(int(chunk, 16))
        else:
            ids.append(_VOCAB_OFFSET + (xxhash.xxh32_intdigest(chunk.encode("utf-8")) & 0x7FFFFFFF))
    return ids


def block_hashes(
    text: str, block_size: int, known: Sequence[int] = (), chars_per_token: float = CHARS_PER_TOKEN
) -> list[int]:
    """Chained 64-bit hashes of the full ``block_size``-token blocks of ``text``.

    Block ``k``'s hash covers its own characters and its parent's hash, so two texts share their
    first ``k`` hashes exactly when they share their first ``k`` blocks. ``known`` are the hashes of
    ``text``'s leading blocks already computed (say, of a prompt ``text`` extends): they are kept and
    only the blocks after them are hashed.
    """
    hashes = list(known)
    parent = hashes[-1] if hashes else ROOT_HASH
    block = len(hashes)
    while True:
        start = _boundary(block * block_size, chars_per_token)
        end = _boundary((block + 1) * block_size, chars_per_token)
        if end > len(text):
            return hashes
        parent = xxhash.xxh3_64_intdigest(text[start:end].encode("utf-8"), seed=parent)
        hashes.append(parent)
        block += 1


def filler_text(index: int) -> str:
    """The ``index``-th generated token: a word from a fixed cycle, with its leading space (4 chars)."""
    return " " + _FILLER[index % len(_FILLER)]
