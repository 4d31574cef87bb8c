"""The simulator's block prefix cache, in process."""

from __future__ import annotations

import pytest

from pcache.sim.cache import PrefixCache
from pcache.sim.config import ReplicaSpec, Timing
from pcache.sim.protocol import render_chat
from pcache.sim.replica import SimReplica
from pcache.sim.tokenizer import CHARS_PER_TOKEN, block_hashes, count_tokens

BLOCK = 16
BLOCK_CHARS = BLOCK * CHARS_PER_TOKEN


def text(tag: str, blocks: int, extra_tokens: int = 0) -> str:
    """``blocks`` full blocks whose content is unique to ``tag``, plus ``extra_tokens`` tokens."""
    body = "".join(f"<{tag}:{index}>".ljust(BLOCK_CHARS, ".") for index in range(blocks))
    return body + "abcd" * extra_tokens


def run(cache: PrefixCache, prompt: str, max_tokens: int = 1) -> int:
    """Admit, prefill (commit) and finish one request; returns its cached tokens."""
    tokens = count_tokens(prompt)
    allocation = cache.allocate(block_hashes(prompt, BLOCK), tokens, tokens + max_tokens)
    assert allocation is not None
    cache.commit(allocation)
    cache.release(allocation)
    return allocation.hit_tokens


def test_tokenizer_is_four_characters_per_token_and_hashes_are_chained() -> None:
    assert count_tokens("") == 0
    assert count_tokens("abcde") == 2
    a = block_hashes(text("a", 3), BLOCK)
    b = block_hashes(text("a", 2) + text("z", 1), BLOCK)
    assert len(a) == 3
    assert a[:2] == b[:2]
    assert a[2] != b[2]
    # the same block content after a different parent hashes differently
    assert block_hashes(text("x", 1) + text("a", 1), BLOCK)[1] != block_hashes(text("a", 1), BLOCK)[0]


def test_second_identical_prompt_hits_its_full_blocks() -> None:
    cache = PrefixCache(num_blocks=100, block_size=BLOCK)
    prompt = text("p", 4, extra_tokens=5)
    assert run(cache, prompt) == 0
    assert run(cache, prompt) == 4 * BLOCK


def test_hit_is_capped_below_prompt_length_and_block_aligned() -> None:
    cache = PrefixCache(num_blocks=100, block_size=BLOCK)
    prompt = text("p", 4)  # exactly 64 tokens: at most 63 may hit, so only 3 blocks
    run(cache, prompt)
    assert run(cache, prompt) == 3 * BLOCK


def test_shared_prefix_hits_up_to_the_first_differing_block() -> None:
    cache = PrefixCache(num_blocks=100, block_size=BLOCK)
    run(cache, text("sys", 3) + text("user1", 2))
    assert run(cache, text("sys", 3) + text("user2", 2)) == 3 * BLOCK


def test_filling_past_capacity_evicts_least_recently_used_prefix_first() -> None:
    cache = PrefixCache(num_blocks=12, block_size=BLOCK)
    a, b = text("a", 4, extra_tokens=2), text("b", 4, extra_tokens=2)  # 4 cached + 1 decode block each
    run(cache, a)
    run(cache, b)
    run(cache, a)  # A is now more recent than B
    run(cache, text("c", 6, extra_tokens=2))  # needs 7 blocks, 4 free: three of B's go, none of A's
    assert cache.evictions == 3
    assert run(cache, a) == 4 * BLOCK
    assert run(cache, b) <= 1 * BLOCK


def test_eviction_takes_a_prefix_tail_before_its_head() -> None:
    cache = PrefixCache(num_blocks=10, block_size=BLOCK)
    a = text("a", 8)
    run(cache, a)  # 8 cached blocks
    run(cache, text("b", 3))  # 4 blocks needed, 2 free: A's last two blocks are evicted
    allocation = cache.allocate(block_hashes(a, BLOCK), count_tokens(a), count_tokens(a) + 1)
    assert allocation is not None
    assert allocation.hit_blocks == 6


def test_running_requests_hold_their_blocks() -> None:
    cache = PrefixCache(num_blocks=10, block_size=BLOCK)
    prompt = text("a", 6)
    held = cache.allocate(block_hashes(prompt, BLOCK), 96, 96 + 32)  # 8 blocks
    assert held is not None
    assert cache.usage == pytest.approx(0.8)
    other = text("b", 2)
    assert cache.allocate(block_hashes(other, BLOCK), 32, 33) is None  # needs 3, only 2 free
    cache.commit(held)
    cache.release(held)
    assert cache.usage == 0.0
    assert cache.cached_blocks == 6  # prompt blocks stay cached, evictable


def test_concurrent_identical_prompts_share_only_committed_blocks() -> None:
    cache = PrefixCache(num_blocks=100, block_size=BLOCK)
    prompt = text("p", 3, extra_tokens=1)
    hashes = block_hashes(prompt, BLOCK)
    first = cache.allocate(hashes, 49, 50)
    second = cache.allocate(hashes, 49, 50)  # first has not finished prefill: nothing to share yet
    assert first is not None and second is not None
    assert second.hit_tokens == 0
    cache.commit(first)
    cache.commit(second)  # same content already registered: second keeps private copies
    cache.release(first)
    cache.release(second)
    assert cache.used_blocks == 0
    assert cache.cached_blocks == 3
    assert run(cache, prompt) == 3 * BLOCK


def test_reset_drops_unreferenced_blocks_only() -> None:
    cache = PrefixCache(num_blocks=100, block_size=BLOCK)
    run(cache, text("a", 2, 1))
    running = cache.allocate(block_hashes(text("b", 2, 1), BLOCK), 33, 34)
    assert running is not None
    cache.commit(running)
    assert cache.reset() is False  # a request still holds blocks
    assert cache.contains(block_hashes(text("b", 2, 1), BLOCK)[0])
    assert not cache.contains(block_hashes(text("a", 2, 1), BLOCK)[0])


def test_full_blocks_of_generated_tokens_are_cached_with_the_prompt() -> None:
    cache = PrefixCache(num_blocks=100, block_size=BLOCK)
    prompt = text("p", 2, extra_tokens=4)
    tokens = count_tokens(prompt)
    allocation = cache.allocate(block_hashes(prompt, BLOCK), tokens, tokens + 40)
    assert allocation is not None
    cache.commit(allocation)
    reply = "abcd" * 39  # the 40th token is sampled but never fed back, so its KV does not exist
    cache.commit(allocation, block_hashes(prompt + reply, BLOCK))
    cache.release(allocation)
    sequence = block_hashes(prompt + reply, BLOCK)  # 2 + 4/16 + 39/16 blocks: 4 full
    assert len(sequence) == 4
    assert all(cache.contains(block_hash) for block_hash in sequence)
    follow_up = prompt + reply + "abcd" + text("next", 2)
    assert cache.match(block_hashes(follow_up, BLOCK), count_tokens(follow_up)) == 4


async def test_next_turn_hits_the_previous_reply_on_the_replica_that_generated_it() -> None:
    def spec(name: str) -> ReplicaSpec:
        return ReplicaSpec(name=name, timing=Timing(t0=0.0, per_prompt_token=0.0, inter_token=0.0))

    home, other = SimReplica(spec("r1")), SimReplica(spec("r2"))
    system = {"role": "system", "content": "s" * 1000}
    first = [system, {"role": "user", "content": "u" * 700}]
    for replica in (home, other):  # both replicas hold the system prompt; only home the reply
        async with replica.generation(render_chat(first[:1]), 1) as warm:
            await warm.prefill()
            await warm.complete()
    async with home.generation(render_chat(first), 100) as turn:
        await turn.prefill()
        reply = await turn.complete()
    assert count_tokens(reply) == 100
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "v" * 300}]
    prompt = render_chat(second)
    # vLLM caches prompt + generated tokens but the last: the full blocks of that sequence are hits.
    computed = render_chat(first) + reply[:-CHARS_PER_TOKEN]
    expected = (len(computed) // BLOCK_CHARS) * BLOCK
    assert expected * CHARS_PER_TOKEN > len(render_chat(first)) + 64  # covers most of the reply
    results = {}
    for replica in (home, other):
        async with replica.generation(prompt, 1) as turn:
            await turn.prefill()
            await turn.complete()
            results[replica.spec.name] = turn.cached_tokens
    assert results["r1"] == expected
    system_blocks = len(render_chat(first[:1]).removesuffix("<|im_start|>assistant\n")) // BLOCK_CHARS
    assert results["r2"] == system_blocks * BLOCK  # another replica: the shared system prompt only
