"""The simulator's stand-in tokenizer at configurable widths: prefix-stable, and counted like its ids."""

from __future__ import annotations

import pytest

from pcache.sim.tokenizer import block_hashes, count_tokens, token_ids

TEXT = "You are a careful assistant. Answer in one line, cite the manual. " * 20


@pytest.mark.parametrize("width", [4.0, 3.0, 2.7, 2.4, 1.0])
def test_count_matches_the_ids_and_the_characters(width: float) -> None:
    count = count_tokens(TEXT, width)
    assert count == len(token_ids(TEXT, chars_per_token=width))
    assert abs(count - len(TEXT) / width) < 1.0


def test_the_default_width_is_four_characters() -> None:
    assert count_tokens("abcdefgh") == 2 and count_tokens("abcdefghi") == 3
    assert token_ids("00ff0010") == [0x00FF, 0x0010]


@pytest.mark.parametrize("width", [4.0, 2.7])
def test_block_hashes_share_exactly_the_shared_prefix_blocks(width: float) -> None:
    block = 16
    shared = TEXT[:500]
    one, two = (
        block_hashes(shared + "first", block, chars_per_token=width),
        block_hashes(shared + "second", block, chars_per_token=width),
    )
    full_shared = int(count_tokens(shared, width) // block)
    assert one[: full_shared - 1] == two[: full_shared - 1]
    assert len(block_hashes(TEXT, block, chars_per_token=width)) == count_tokens(TEXT, width) // block
    known = block_hashes(TEXT[:400], block, chars_per_token=width)
    assert block_hashes(TEXT, block, known, width) == block_hashes(TEXT, block, chars_per_token=width)
