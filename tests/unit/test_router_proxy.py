"""Proxy helpers: hop-by-hop header filtering and finding usage in an SSE stream."""

from __future__ import annotations

import json

from pcache.router.proxy import (
    _all_failed,
    _forward_headers,
    _response_headers,
    _StreamUsage,
    error_body,
)


def test_hop_by_hop_headers_are_not_forwarded() -> None:
    scope = {
        "headers": [
            (b"host", b"router:8080"),
            (b"connection", b"keep-alive"),
            (b"content-length", b"12"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", b"Bearer sk-x"),
            (b"x-session-id", b"s1"),
        ]
    }
    forward, plain = _forward_headers(scope)
    assert forward == [(b"authorization", b"Bearer sk-x"), (b"x-session-id", b"s1")]
    assert plain["x-session-id"] == "s1" and plain["host"] == "router:8080"


def test_response_headers_carry_the_decision_and_a_fresh_length() -> None:
    upstream = [
        (b"content-type", b"application/json"),
        (b"Content-Length", b"999"),
        (b"Connection", b"close"),
    ]
    headers = _response_headers(upstream, [(b"x-pcache-replica", b"r1")], 10)
    assert headers == [
        (b"content-type", b"application/json"),
        (b"content-length", b"10"),
        (b"x-pcache-replica", b"r1"),
    ]


def test_stream_usage_is_found_even_when_the_event_is_split_across_chunks() -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 96}}
    event = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    tracker = _StreamUsage()
    tracker.feed(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n')
    tracker.feed(event[:30])
    tracker.feed(event[30:] + b"data: [DONE]\n\n")
    assert (tracker.prompt_tokens, tracker.cached_tokens) == (120, 96)


def test_error_bodies_are_openai_style() -> None:
    body = json.loads(error_body("no replica", "service_unavailable", "no_replica"))
    assert body == {
        "error": {"message": "no replica", "type": "service_unavailable", "code": "no_replica", "param": None}
    }


def test_the_status_after_every_attempt_failed_says_what_failed() -> None:
    assert _all_failed({"connect"}) == (503, "service_unavailable", "no_replica_reachable")
    assert _all_failed(set()) == (503, "service_unavailable", "no_replica_reachable")
    assert _all_failed({"connect", "timeout"})[:1] == (504,)
    assert _all_failed({"status"}) == (502, "upstream_error", "upstream_failed")
    assert _all_failed({"connect", "body"})[0] == 502
