"""Fingerprints: concatenative rendering, chained blocks, Tier-1 matching, sessions, bad bodies."""

from __future__ import annotations

import pytest

from pcache.fingerprint import SessionSource
from pcache.prompt import (
    FingerprintConfig,
    PromptError,
    Tier1Index,
    chain_blocks,
    fingerprint_request,
    prefix_blocks,
    render_chat,
    render_message,
)

SYSTEM = "You are a careful assistant. " * 40  # ~1,160 chars: four full 256-char blocks and a tail
CONFIG = FingerprintConfig()


def chat(*turns: tuple[str, str], **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": r, "content": c} for r, c in turns], **extra}


def test_chat_rendering_is_the_concatenation_of_its_messages() -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
    assert render_chat(messages) == "".join(render_message(m) for m in messages)


def test_prompts_share_leading_blocks_exactly_as_long_as_they_share_chunks() -> None:
    a = "x" * 1000 + "A" * 500
    b = "x" * 1000 + "B" * 500
    blocks_a, blocks_b = chain_blocks(a, 256), chain_blocks(b, 256)
    assert blocks_a[:3] == blocks_b[:3]  # chars 0..767 are equal
    assert blocks_a[3] != blocks_b[3]  # chunk 3 (768..1023) differs from char 1000 on
    assert all(x != y for x, y in zip(blocks_a[3:], blocks_b[3:], strict=True))


def test_a_change_early_changes_every_later_block() -> None:
    a = chain_blocks("a" + "z" * 2000, 256)
    b = chain_blocks("b" + "z" * 2000, 256)
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_tier1_prefix_rendered_as_system_message_matches_real_requests() -> None:
    prefix = prefix_blocks(SYSTEM, "chat", CONFIG)
    assert len(prefix) == len(render_message({"role": "system", "content": SYSTEM})) // 256
    index = Tier1Index({"support-bot": prefix})
    for question in ("What is my balance?", "Cancel my order " * 30):
        fp = fingerprint_request(chat(("system", SYSTEM), ("user", question)), {}, CONFIG, index)
        assert fp.blocks[: len(prefix)] == prefix
        assert (fp.tier1, fp.tier1_blocks) == ("support-bot", len(prefix))


def test_tier1_prefix_as_completion_text_matches_completion_requests() -> None:
    prefix = prefix_blocks(SYSTEM, "completion", CONFIG)
    index = Tier1Index({"raw": prefix})
    fp = fingerprint_request({"prompt": SYSTEM + "Question: why?"}, None, CONFIG, index)
    assert fp.tier1 == "raw"
    other = fingerprint_request({"prompt": "Different start " + SYSTEM}, None, CONFIG, index)
    assert other.tier1 is None


def test_tier1_index_prefers_the_longest_matching_prefix() -> None:
    short = prefix_blocks(SYSTEM[:600], "completion", CONFIG)
    long = prefix_blocks(SYSTEM, "completion", CONFIG)
    index = Tier1Index({"short": short, "long": long})
    assert index.match(chain_blocks(SYSTEM + "tail", 256)) == ("long", len(long))
    assert index.match(chain_blocks(SYSTEM[:700] + "x" * 600, 256)) == ("short", len(short))
    assert index.match(chain_blocks("unrelated" * 100, 256)) is None


def test_prefix_shorter_than_a_block_never_matches() -> None:
    assert prefix_blocks("tiny", "completion", CONFIG) == ()
    index = Tier1Index({"tiny": ()})
    assert len(index) == 0
    assert index.match(chain_blocks("tiny and more", 256)) is None


def test_session_comes_from_header_then_user_then_first_turns() -> None:
    body = chat(("system", SYSTEM), ("user", "hello"), user="alice")
    by_header = fingerprint_request(body, {"X-Session-Id": "s-42"}, CONFIG)
    assert (by_header.session, by_header.session_source) == ("s-42", SessionSource.HEADER)
    by_user = fingerprint_request(body, {}, CONFIG)
    assert (by_user.session, by_user.session_source) == ("alice", SessionSource.USER)
    derived = fingerprint_request(chat(("system", SYSTEM), ("user", "hello")), {}, CONFIG)
    assert derived.session_source is SessionSource.DERIVED


def test_derived_session_is_stable_across_turns_of_one_conversation() -> None:
    turn1 = chat(("system", SYSTEM), ("user", "hello"))
    turn2 = chat(("system", SYSTEM), ("user", "hello"), ("assistant", "hi!"), ("user", "more"))
    other = chat(("system", SYSTEM), ("user", "a different opener"))
    s1 = fingerprint_request(turn1, {}, CONFIG).session
    assert s1 == fingerprint_request(turn2, {}, CONFIG).session
    assert s1 != fingerprint_request(other, {}, CONFIG).session


def test_completion_session_is_derived_from_the_first_block_past_tier1() -> None:
    prefix = prefix_blocks(SYSTEM, "completion", CONFIG)
    index = Tier1Index({"p": prefix})
    a = fingerprint_request({"prompt": SYSTEM + "user one " * 50}, {}, CONFIG, index)
    b = fingerprint_request({"prompt": SYSTEM + "user two " * 50}, {}, CONFIG, index)
    assert a.session != b.session
    assert a.session == f"d{a.blocks[len(prefix)]:016x}"


def test_content_as_text_parts_renders_like_a_string() -> None:
    as_string = fingerprint_request(chat(("user", "hello world")), {}, CONFIG)
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}],
            }
        ]
    }
    assert fingerprint_request(parts, {}, CONFIG).blocks == as_string.blocks


def test_token_estimate_is_about_chars_over_four_unless_a_tokenizer_is_set() -> None:
    fp = fingerprint_request({"prompt": "x" * 4000}, {}, CONFIG)
    assert fp.prompt_tokens == 1000
    assert fp.block_tokens == 64
    exact = FingerprintConfig(tokenizer=lambda text: len(text.split()))
    assert fingerprint_request({"prompt": "one two three"}, {}, exact).prompt_tokens == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({}, "neither 'messages' nor 'prompt'"),
        ({"messages": "hi"}, "messages must be a list"),
        ({"messages": []}, "messages is empty"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": 5}]}, "content must be a string or a list"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "text must be a string"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": 7}, "prompt must be"),
        ({"prompt": "x", "user": 3}, "user must be a string"),
    ],
)
def test_malformed_bodies_raise_prompt_error_with_a_clear_message(body: object, message: str) -> None:
    with pytest.raises(PromptError, match=message.replace("[", r"\[").replace("]", r"\]")):
        fingerprint_request(body, {}, CONFIG)


def test_prompt_error_is_a_value_error() -> None:
    assert issubclass(PromptError, ValueError)
