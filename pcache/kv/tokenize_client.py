"""The fallback tokenizer: the engine's own ``/tokenize`` (vLLM's shape), over loopback HTTP.

Costs one round trip per request before routing (measured in ``calls`` / ``seconds``); any failure
answers None and the request is routed on the approximate index.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from pcache.kv.tokens import EngineTokens

__all__ = ["EngineTokenize"]


class EngineTokenize:
    """Tokenizes chat and completion bodies through a replica's ``/tokenize``."""

    def __init__(self, timeout_s: float = 2.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self.calls = 0
        self.failures = 0
        self.seconds = 0.0

    async def tokens(self, base_url: str, body: Mapping[str, Any]) -> EngineTokens | None:
        """The prompt's token ids as the engine at ``base_url`` counts them, or None."""
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
            return EngineTokens(prompt, "request")  # already token ids
        request: dict[str, Any] = {}
        if isinstance(body.get("model"), str):
            request["model"] = body["model"]
        if "messages" in body:
            request["messages"] = body["messages"]
        elif isinstance(prompt, str):
            request["prompt"] = prompt
        else:
            return None
        started = time.perf_counter()
        self.calls += 1
        try:
            response = await self._client.post(base_url + "/tokenize", json=request)
            tokens = response.json().get("tokens") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            tokens = None
        finally:
            self.seconds += time.perf_counter() - started
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            self.failures += 1
            return None
        return EngineTokens(tokens, "tokenize")

    async def aclose(self) -> None:
        await self._client.aclose()
