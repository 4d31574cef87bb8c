"""Hostile request bodies against the parser and fingerprint: PromptError or a Fingerprint, nothing else.

Random JSON of every shape, bodies that are almost right (wrong types in one field), lone surrogates
(what ``"\\ud800"`` in a JSON body decodes to) and nesting deeper than the interpreter's recursion
limit. Whatever comes in, ``fingerprint_request`` must either fingerprint it or raise its typed error.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pcache.fingerprint import Fingerprint
from pcache.prompt import FingerprintConfig, PromptError, Tier1Index, fingerprint_request, prefix_blocks
from pcache.router.config import parse_config
from pcache.router.daemon import RouterDaemon

CONFIG = FingerprintConfig(chunk_chars=16)
SYSTEM = "You are a support bot. Keep it short. " * 4
INDEX = Tier1Index({"support": prefix_blocks(SYSTEM, "chat", CONFIG)})
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every code point, including lone surrogates: JSON's "\ud800" decodes to one.
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", ""]) | json_values
contents = (
    any_text
    | st.none()
    | st.lists(
        st.fixed_dictionaries({"type": st.just("text"), "text": any_text | json_values})
        | st.fixed_dictionaries({"type": json_values}, optional={"image_url": json_values})
        | json_values,
        max_size=3,
    )
    | json_values
)
messages = st.fixed_dictionaries(
    {"role": roles, "content": contents}, optional={"tool_calls": json_values, "name": json_values}
)
chat_bodies = st.fixed_dictionaries(
    {"messages": st.lists(messages, max_size=4) | json_values},
    optional={"model": json_values, "user": json_values, "tools": json_values, "stream": json_values},
)
completion_bodies = st.fixed_dictionaries(
    {"prompt": any_text | st.lists(any_text, max_size=3) | st.lists(st.integers(), max_size=5) | json_values},
    optional={"model": json_values, "user": json_values},
)
headers = st.dictionaries(
    st.sampled_from(["x-session-id", "X-Session-Id", "authorization", "x-other"]),
    st.text(alphabet=string.printable, max_size=20),
    max_size=3,
)


def _nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def _fingerprint_or_prompt_error(body: object, hdrs: dict[str, str] | None = None) -> None:
    try:
        fingerprint = fingerprint_request(body, hdrs, CONFIG, INDEX)
    except PromptError as exc:
        assert str(exc), "a PromptError always says what is wrong"
        return
    assert isinstance(fingerprint, Fingerprint)
    assert fingerprint.blocks, "a fingerprinted request has at least one block"
    assert fingerprint.session, "every fingerprint carries a session key"
    assert fingerprint.prompt_tokens >= 1


@FUZZ
@given(body=json_values)
def test_random_json_is_fingerprinted_or_refused_with_prompt_error(body: object) -> None:
    _fingerprint_or_prompt_error(body)


@FUZZ
@given(body=chat_bodies, hdrs=headers)
@example(body={"messages": [{"role": "user", "content": "\ud800 lone surrogate"}]}, hdrs={})
@example(body={"messages": [{"role": "user", "content": [{"type": "image", "x": _nested(1200)}]}]}, hdrs={})
@example(body={"messages": [{"role": "user", "content": "a", "tool_calls": _nested(1200)}]}, hdrs={})
@example(body={"messages": [{"role": "user", "content": "a"}], "tools": _deep_dict(1200)}, hdrs={})
@example(body={"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, hdrs={})
@example(body={"messages": [{"role": "user", "content": "hi"}], "user": 12}, hdrs={})
def test_hostile_chat_bodies_are_fingerprinted_or_refused_with_prompt_error(
    body: dict[str, Any], hdrs: dict[str, str]
) -> None:
    _fingerprint_or_prompt_error(body, hdrs)


@FUZZ
@given(body=completion_bodies, hdrs=headers)
@example(body={"prompt": [True, False]}, hdrs={})
@example(body={"prompt": ["", "x"]}, hdrs={})
@example(body={"prompt": []}, hdrs={})
def test_hostile_completion_bodies_are_fingerprinted_or_refused_with_prompt_error(
    body: dict[str, Any], hdrs: dict[str, str]
) -> None:
    _fingerprint_or_prompt_error(body, hdrs)


def test_nesting_deeper_than_the_recursion_limit_is_a_prompt_error_not_a_crash() -> None:
    """Regression: json.dumps of deep parts/tool_calls/tools raised RecursionError (found by this file)."""
    for body in (
        {"messages": [{"role": "user", "content": [{"type": "image", "x": _nested(1200)}]}]},
        {"messages": [{"role": "user", "content": "a", "tool_calls": _nested(1200)}]},
        {"messages": [{"role": "user", "content": "a"}], "tools": _deep_dict(1200)},
    ):
        try:
            fingerprint_request(body, {}, CONFIG)
        except PromptError as exc:
            assert "nested too deeply" in str(exc)
        else:
            raise AssertionError("a 1200-deep structure must be refused")


@FUZZ
@given(
    first=st.text(min_size=1, max_size=200),
    second=st.text(min_size=1, max_size=200),
    session=st.text(alphabet=string.ascii_letters, min_size=1, max_size=10),
)
def test_valid_chats_keep_the_shared_prefix_property_and_the_header_session(
    first: str, second: str, session: str
) -> None:
    def body(user: str) -> dict[str, Any]:
        return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}

    a = fingerprint_request(body(first), {"x-session-id": session}, CONFIG, INDEX)
    b = fingerprint_request(body(second), {}, CONFIG, INDEX)
    shared = len(prefix_blocks(SYSTEM, "chat", CONFIG))
    assert a.blocks[:shared] == b.blocks[:shared]
    assert a.tier1 == b.tier1 == "support"
    assert a.session == session


def test_arbitrary_bytes_sent_to_the_proxy_get_an_openai_error_never_a_crash() -> None:
    """The proxy's own path (its JSON decoder, its checks, the fingerprint) on hostile bytes, in
    process: a 400 for what it refuses, a 503 for what it would route (the fleet is empty), always an
    OpenAI-style error body; an exception escaping the app fails the test (TestClient re-raises)."""
    daemon = RouterDaemon(parse_config("state: 'memory://'\n"))
    with TestClient(daemon.proxy) as client:

        @FUZZ
        @given(raw=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
        @example(raw=b"[" * 5000)  # deeper than any decoder's recursion limit
        @example(raw=b'{"messages": [{"role": "user", "content": "\\ud800"}]}')  # a lone surrogate
        @example(raw=b'{"prompt": "hi", "max_tokens": 1e999}')
        @example(raw=b"\xff\xfe")
        @example(raw=json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode())
        def send(raw: bytes) -> None:
            response = client.post(
                "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
            )
            assert response.status_code in (400, 503), (response.status_code, response.text)
            error = response.json()["error"]
            assert error["message"], response.text
            if response.status_code == 400:
                assert error["type"] == "invalid_request_error", response.text

        send()
