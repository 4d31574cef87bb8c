"""Chat, completions and streaming through the router, judged by the engines' own counters."""

from __future__ import annotations

from tests.engines_real.engine import BLOCK_SIZE
from tests.engines_real.stack import EnginePair
from tests.engines_real.traffic import chat, complete, prose, stream_chat
from tests.harness.router import RouterProcess

SYSTEM = prose("smoke-system", 2600)  # about 1,000 of the tiny tokenizer's tokens: 7 full blocks


def test_chat_second_turn_hits_the_first_turns_blocks_on_the_same_engine(
    router: RouterProcess, fleet: EnginePair
) -> None:
    before = fleet.counters("vllm:prefix_cache_hits_total")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "first question"}]
    first = chat(router.url, messages, session="smoke-1")
    messages += [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "second question"},
    ]
    second = chat(router.url, messages, session="smoke-1")

    assert first.replica in ("e1", "e2") and second.replica == first.replica
    assert first.cached_tokens == 0
    assert second.cached_tokens >= (first.prompt_tokens // BLOCK_SIZE) * BLOCK_SIZE > 0
    after = fleet.counters("vllm:prefix_cache_hits_total")
    hits = {name: after[name] - before[name] for name in after}
    assert hits[first.replica] == second.cached_tokens
    assert sum(hits.values()) == second.cached_tokens


def test_completions_repeat_hits_on_the_engine_that_served_it(
    router: RouterProcess, fleet: EnginePair
) -> None:
    prompt = prose("smoke-completion", 2000)
    first = complete(router.url, prompt, session="smoke-2")
    again = complete(router.url, prompt + " and one more line", session="smoke-2")
    assert again.replica == first.replica
    assert first.cached_tokens == 0 and again.cached_tokens > 0
    assert again.cached_tokens % BLOCK_SIZE == 0


def test_streaming_relays_every_chunk_and_the_engines_usage(router: RouterProcess, fleet: EnginePair) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "stream it"}]
    first = stream_chat(router.url, messages, session="smoke-3", max_tokens=16)
    second = stream_chat(router.url, messages, session="smoke-3", max_tokens=16)
    assert first.prompt_tokens > BLOCK_SIZE and second.prompt_tokens == first.prompt_tokens
    assert second.body["usage"]["completion_tokens"] >= 1
    assert first.cached_tokens == 0 and second.cached_tokens > 0
    assert second.replica == first.replica
