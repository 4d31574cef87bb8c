"""The precise index: token-chain keys from BlockStored, removals by medium, weights, bounds."""

from __future__ import annotations

from pcache.kv.events import AllBlocksCleared, BlockRemoved, BlockStored
from pcache.kv.index import DEFAULT_MEDIUM_WEIGHTS, ReplicaBlocks, chain_keys

TOKENS = list(range(100, 132))  # 4 blocks of 8


def stored(hashes: list[int], parent: int | None, tokens: list[int], medium: str = "GPU") -> BlockStored:
    return BlockStored(
        block_hashes=list(hashes), parent_block_hash=parent, token_ids=tokens, block_size=8, medium=medium
    )


def test_a_request_with_the_engines_tokens_matches_the_blocks_its_events_stored() -> None:
    blocks = ReplicaBlocks()
    blocks.apply([stored([11, 12], None, TOKENS[:16]), stored([13], 12, TOKENS[16:24])])
    found = blocks.match(chain_keys(TOKENS, 8), DEFAULT_MEDIUM_WEIGHTS)
    assert (found.blocks, found.tokens, blocks.block_size) == (3, 24, 8)
    assert found.cached_tokens(prompt_tokens=32) == 24
    assert found.cached_tokens(prompt_tokens=24) == 16  # at least one prompt token is computed


def test_a_different_token_in_a_block_ends_the_match_there() -> None:
    blocks = ReplicaBlocks()
    blocks.apply([stored([11, 12, 13], None, TOKENS[:24])])
    other = [*TOKENS[:9], 999, *TOKENS[10:]]
    assert blocks.match(chain_keys(other, 8), DEFAULT_MEDIUM_WEIGHTS).blocks == 1


def test_removed_blocks_end_the_match_and_all_cleared_forgets_everything() -> None:
    blocks = ReplicaBlocks()
    blocks.apply([stored([11, 12, 13], None, TOKENS[:24])])
    blocks.apply([BlockRemoved(block_hashes=[12], medium="GPU")])
    assert blocks.match(chain_keys(TOKENS, 8), DEFAULT_MEDIUM_WEIGHTS).blocks == 1
    blocks.apply([AllBlocksCleared()])
    assert len(blocks) == 0 and blocks.match(chain_keys(TOKENS, 8), DEFAULT_MEDIUM_WEIGHTS).blocks == 0


def test_a_block_is_credited_at_its_best_mediums_weight_and_split_by_medium() -> None:
    blocks = ReplicaBlocks()
    blocks.apply([stored([11], None, TOKENS[:8]), stored([12], 11, TOKENS[8:16], medium="CPU")])
    found = blocks.match(chain_keys(TOKENS, 8), {"GPU": 1.0, "CPU": 0.8})
    assert found.tokens_by_medium == {"GPU": 8, "CPU": 8}
    assert found.weighted_tokens == 8 * 1.0 + 8 * 0.8
    blocks.apply([stored([12], 11, TOKENS[8:16], medium="GPU")])  # back on GPU too: full credit
    assert blocks.match(chain_keys(TOKENS, 8), {"GPU": 1.0, "CPU": 0.8}).weighted_tokens == 16
    blocks.apply([BlockRemoved(block_hashes=[12], medium="GPU")])  # still on CPU
    assert blocks.match(chain_keys(TOKENS, 8), {"GPU": 1.0, "CPU": 0.8}).tokens_by_medium == {
        "GPU": 8,
        "CPU": 8,
    }
    assert blocks.held_blocks() == {"GPU": 1, "CPU": 1}


def test_blocks_whose_parent_was_never_seen_or_with_extra_keys_are_not_indexed() -> None:
    blocks = ReplicaBlocks()
    blocks.apply([stored([21, 22], 999, TOKENS[:16])])  # parent unknown: history lost
    salted = stored([31], None, TOKENS[:8])
    salted.extra_keys = [["salt"]]
    blocks.apply([salted])
    assert len(blocks) == 0 and blocks.unplaced == 3


def test_memory_is_bounded_per_replica_oldest_first() -> None:
    blocks = ReplicaBlocks(max_blocks=2)
    blocks.apply([stored([11, 12, 13], None, TOKENS[:24])])
    assert len(blocks) == 2 and blocks.trimmed == 1
    assert blocks.match(chain_keys(TOKENS, 8), DEFAULT_MEDIUM_WEIGHTS).blocks == 0  # the first went


def test_digest_hashes_work_like_int_hashes() -> None:
    blocks = ReplicaBlocks()
    blocks.apply(
        [
            stored([], None, []),
            BlockStored(
                block_hashes=[b"a" * 32, b"b" * 32],
                parent_block_hash=None,
                token_ids=TOKENS[:16],
                block_size=8,
            ),
        ]
    )
    blocks.apply([BlockRemoved(block_hashes=[b"b" * 32], medium="GPU")])
    assert blocks.match(chain_keys(TOKENS, 8), DEFAULT_MEDIUM_WEIGHTS).blocks == 1
