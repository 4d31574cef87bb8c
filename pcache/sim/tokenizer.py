"""A deterministic stand-in tokenizer: one token per 4 characters, so prefixes share tokens exactly.

Real tokenizers average roughly 4 characters per token on English text; fixed-width chunks keep
that ratio while making token boundaries (and so block hashes) a pure function of the text prefix.
"""

from __future__ import annotations

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


def count_tokens(text: str) -> int:
    """Number of tokens in ``text`` (ceil of characters / 4)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def token_ids(text: str, start: int = 0, stop: int | None = None) -> list[int]:
    """The ids of tokens ``start..stop`` of ``text`` (what ``/tokenize`` and the KV events carry).

    A token of four hex digits is that number (so a prompt sent as token ids < 65536, which the
    simulator renders as four hex digits each, tokenizes back to the same ids); any other token is
    65536 plus a 31-bit hash of its characters. Equal texts give equal ids; distinct tokens collide
    with a chance of about 2^-31 per pair, the price of a stand-in vocabulary.
    """
    end = count_tokens(text) if stop is None else stop
    ids: list[int] = []
    for index in range(start, end):
        chunk = text[index * CHARS_PER_TOKEN : (index + 1) * CHARS_PER_TOKEN]
        if len(chunk) == CHARS_PER_TOKEN and all(c in _HEX for c in chunk):
            ids.append(int(chunk, 16))
        else:
            ids.append(_VOCAB_OFFSET + (xxhash.xxh32_intdigest(chunk.encode("utf-8")) & 0x7FFFFFFF))
    return ids


def block_hashes(text: str, block_size: int, known: Sequence[int] = ()) -> list[int]:
    """Chained 64-bit hashes of the full ``block_size``-token blocks of ``text``.

    Block ``k``'s hash covers its own characters and its parent's hash, so two texts share their
    first ``k`` hashes exactly when they share their first ``k`` blocks. ``known`` are the hashes of
    ``text``'s leading blocks already computed (say, of a prompt ``text`` extends): they are kept and
    only the blocks after them are hashed.
    """
    width = block_size * CHARS_PER_TOKEN
    hashes = list(known)
    parent = hashes[-1] if hashes else ROOT_HASH
    for start in range(len(hashes) * width, len(text) - width + 1, width):
        parent = xxhash.xxh3_64_intdigest(text[start : start + width].encode("utf-8"), seed=parent)
        hashes.append(parent)
    return hashes


def filler_text(index: int) -> str:
    """The ``index``-th generated token: a word from a fixed cycle, with its leading space (4 chars)."""
    return " " + _FILLER[index % len(_FILLER)]
