"""Requests for the real-engine tests: deterministic prose and calls through the router that
return what the engine reported (``usage``, cached tokens) and which replica served them."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

from tests.engines_real.engine import MODEL_NAME

__all__ = ["Answer", "chat", "complete", "prose", "stream_chat"]

_VOCABULARY = (
    "the router keeps every session on the replica that already holds its history while shared "
    "system prompts live on a few owners so the cache is not evicted everywhere at once and a "
    "drained replica hands its prefixes to a successor that is prewarmed before traffic moves "
    "engines report prefix cache hits in full blocks of tokens queries running waiting requests "
    "latency percentiles over a recent window customer invoice refund shipping warranty manual "
    "policy escalation ticket priority account password network outage database backup restore"
)
_WORDS = _VOCABULARY.split()


def prose(seed: int | str, chars: int) -> str:
    """About ``chars`` characters of seeded word salad (distinct seeds share no long prefix)."""
    rng = random.Random(str(seed))
    words: list[str] = [f"[{seed}]"]
    length = len(words[0])
    while length < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words) + "."


@dataclass(frozen=True)
class Answer:
    """One response through the router: the replica that served it and the engine's usage."""

    replica: str
    prompt_tokens: int
    cached_tokens: int
    body: dict[str, Any]
    text: str


def _answer(response: httpx.Response, body: dict[str, Any], text: str) -> Answer:
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Answer(
        replica=response.headers.get("x-pcache-replica", ""),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        cached_tokens=int(details.get("cached_tokens") or 0),
        body=body,
        text=text,
    )


def _post(url: str, path: str, payload: dict[str, Any], session: str | None) -> httpx.Response:
    headers = {"x-session-id": session} if session else {}
    response = httpx.post(f"{url}{path}", json=payload, headers=headers, timeout=120.0)
    assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text}"
    return response


def chat(
    url: str, messages: list[dict[str, str]], *, session: str | None = None, max_tokens: int = 4
) -> Answer:
    """A non-streamed chat completion through the router (or an engine) at ``url``."""
    payload = {"model": MODEL_NAME, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    response = _post(url, "/v1/chat/completions", payload, session)
    body = response.json()
    return _answer(response, body, body["choices"][0]["message"]["content"] or "")


def complete(url: str, prompt: str, *, session: str | None = None, max_tokens: int = 4) -> Answer:
    """A non-streamed text completion."""
    payload = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    response = _post(url, "/v1/completions", payload, session)
    body = response.json()
    return _answer(response, body, body["choices"][0]["text"])


def stream_chat(
    url: str, messages: list[dict[str, str]], *, session: str | None = None, max_tokens: int = 8
) -> Answer:
    """A streamed chat completion with the usage chunk; fails on any ``error`` event."""
    payload = {
        "model": MODEL_NAME,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"x-session-id": session} if session else {}
    text: list[str] = []
    usage: dict[str, Any] = {}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=payload, headers=headers, timeout=120.0
    ) as response:
        if response.status_code != 200:
            response.read()
            raise AssertionError(f"stream: {response.status_code} {response.text}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            assert "error" not in event, f"error event in stream: {event}"
            for choice in event.get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
            usage = event.get("usage") or usage
    return _answer(response, {"usage": usage}, "".join(text))
