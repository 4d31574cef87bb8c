"""The HTTP face of one simulated replica: vLLM's OpenAI server routes plus ``/sim/faults``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pcache.sim.config import ConfigError
from pcache.sim.protocol import (
    ParsedRequest,
    RequestError,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    error_body,
    new_id,
    parse_request,
    usage,
)
from pcache.sim.replica import EngineRestarted, Generation, SimReplica
from pcache.sim.tokenize import tokenize_body

__all__ = ["SimulatedDisconnect", "build_app", "quiet_simulated_disconnects"]


class SimulatedDisconnect(ConnectionAbortedError):
    """Raised inside a stream to make the server drop the connection (``die_after_chunks``)."""


class _DropSimulatedDisconnects(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, SimulatedDisconnect | EngineRestarted):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def quiet_simulated_disconnects() -> None:
    """Keep the injected mid-stream deaths out of uvicorn's error log (they are the point)."""
    logging.getLogger("uvicorn.error").addFilter(_DropSimulatedDisconnects())


def _error(message: str, kind: str, status: int) -> JSONResponse:
    return JSONResponse(error_body(message, kind, status), status_code=status)


_DONE = b"data: [DONE]\n\n"

# vLLM 0.32's answer to a JSON endpoint posted without ``content-type: application/json``
# (``validate_json_request`` raising a RequestValidationError, rendered by its validation handler).
UNSUPPORTED_MEDIA_TYPE = {
    "error": {
        "message": "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
        "type": "Bad Request",
        "param": None,
        "code": 400,
    }
}
# What FastAPI (so vLLM) answers for a route it does not serve, e.g. the dev-mode endpoints.
NOT_FOUND = {"detail": "Not Found"}


def _not_json(request: Request) -> Response | None:
    """vLLM's 400 when the body is not declared as JSON (media type compared case-insensitively)."""
    media_type = request.headers.get("content-type", "").lower().split(";", 1)[0]
    if media_type != "application/json":
        return JSONResponse(UNSUPPORTED_MEDIA_TYPE, status_code=400)
    return None


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def build_app(replica: SimReplica) -> Starlette:
    """A Starlette app serving ``replica`` the way ``vllm serve`` would."""
    spec = replica.spec

    async def health(request: Request) -> Response:
        if replica.faults.unhealthy:
            return Response(status_code=503)
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": spec.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "vllm",
                        "root": spec.model,
                        "parent": None,
                        "max_model_len": spec.max_model_len,
                        "permission": [],
                    }
                ],
            }
        )

    async def metrics(request: Request) -> Response:
        return Response(replica.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def tokenize(request: Request) -> Response:
        refused = _not_json(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return _error(f"request body is not valid JSON: {exc}", "BadRequestError", 400)
        try:
            answer = tokenize_body(
                body,
                served_model=spec.model,
                max_model_len=spec.max_model_len,
                chars_per_token=spec.chars_per_token,
            )
        except RequestError as exc:
            return _error(exc.message, exc.kind, exc.status)
        return JSONResponse(answer)

    async def kv_event_sources(request: Request) -> Response:
        """vLLM's ``/kv_event_sources``: the publisher's bound addresses per data-parallel rank."""
        publisher = replica.kv_events
        if publisher is None:
            return JSONResponse({})
        source = {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": publisher.endpoint,
            "replay_endpoint": publisher.replay_endpoint,
            "topic": publisher.topic,
        }
        return JSONResponse({"0": source})

    async def reset_prefix_cache(request: Request) -> Response:
        if not spec.dev_mode:  # like vLLM without VLLM_SERVER_DEV_MODE=1: no such route
            return JSONResponse(NOT_FOUND, status_code=404)
        replica.cache.reset()
        return Response(status_code=200)

    async def get_faults(request: Request) -> Response:
        return JSONResponse({**asdict(replica.faults), "restarts": replica.restarts})

    async def post_faults(request: Request) -> Response:
        try:
            changes = json.loads(await request.body())
        except ValueError:
            return _error("fault body must be JSON", "BadRequestError", 400)
        if not isinstance(changes, dict):
            return _error("fault body must be a JSON object", "BadRequestError", 400)
        try:
            faults = replica.faults.updated(changes)
        except ConfigError as exc:
            return _error(str(exc), "BadRequestError", 400)
        restart = changes.get("restart", False)
        if not isinstance(restart, bool):
            return _error("restart must be true or false", "BadRequestError", 400)
        replica.set_faults(faults)
        if restart:
            replica.restart()
        return JSONResponse({**asdict(replica.faults), "restarts": replica.restarts})

    async def completions(request: Request) -> Response:
        return await _serve(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await _serve(request, chat=True)

    async def _serve(request: Request, *, chat: bool) -> Response:
        refused = _not_json(request)
        if refused is not None:
            return refused
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error(f"request body is not valid JSON: {exc}", "BadRequestError", 400)
        try:
            parsed = parse_request(body, chat=chat, served_model=spec.model)
        except RequestError as exc:
            return _error(exc.message, exc.kind, exc.status)
        await replica.wait_unstalled()
        if replica.faults.unhealthy:
            return _error("engine is unhealthy (simulated fault)", "InternalServerError", 500)
        if replica.should_fail():
            return _error("simulated internal error (error_rate fault)", "InternalServerError", 500)
        generation = replica.generation(
            parsed.prompt, parsed.max_tokens or spec.default_max_tokens, prompt_tokens=parsed.prompt_tokens
        )
        total = generation.prompt_tokens + generation.max_tokens
        if total > spec.max_model_len:
            return _error(
                f"This model's maximum context length is {spec.max_model_len} tokens. However, you "
                f"requested {total} tokens ({generation.prompt_tokens} in the messages, "
                f"{generation.max_tokens} in the completion). Please reduce the length of the messages "
                "or completion.",
                "BadRequestError",
                400,
            )
        if generation.blocks_needed > spec.num_gpu_blocks:
            return _error(
                f"request needs {generation.blocks_needed} KV blocks but the cache has only "
                f"{spec.num_gpu_blocks}",
                "BadRequestError",
                400,
            )
        if parsed.stream:
            return StreamingResponse(_stream(parsed, generation), media_type="text/event-stream")
        try:
            async with generation:
                await generation.prefill()
                text = await generation.complete()
        except EngineRestarted as exc:
            return _error(str(exc), "InternalServerError", 500)
        usage_info = usage(generation.prompt_tokens, generation.generated, generation.cached_tokens)
        build = chat_response if chat else completion_response
        return JSONResponse(build(new_id(chat), spec.model, text, "length", usage_info))

    async def _stream(parsed: ParsedRequest, generation: Generation) -> AsyncIterator[bytes]:
        request_id, created, model = new_id(parsed.chat), int(time.time()), parsed.model
        die_after = replica.faults.die_after_chunks
        sent = 0

        def emit(payloads: list[dict[str, Any] | None]) -> tuple[bytes, bool]:
            """SSE bytes for these events (``None`` is ``[DONE]``) and whether to die after them."""
            nonlocal sent
            allowed = len(payloads) if die_after is None else max(die_after - sent, 0)
            sent += min(allowed, len(payloads))
            data = b"".join(_DONE if payload is None else _sse(payload) for payload in payloads[:allowed])
            return data, allowed < len(payloads)

        async with generation:
            await generation.prefill()
            payloads: list[dict[str, Any] | None] = []
            if parsed.chat:
                payloads.append(chat_chunk(request_id, model, created, {"role": "assistant", "content": ""}))
            async for tokens in generation.stream():
                first = generation.generated - len(tokens)  # index of tokens[0] in the completion
                for offset, token in enumerate(tokens):
                    last = first + offset + 1 == generation.max_tokens
                    reason = "length" if last else None
                    if parsed.chat:
                        payloads.append(chat_chunk(request_id, model, created, {"content": token}, reason))
                    else:
                        payloads.append(completion_chunk(request_id, model, created, token, reason))
                data, dead = emit(payloads)
                payloads = []
                if data:
                    yield data
                if dead:
                    raise SimulatedDisconnect(f"simulated death after {die_after} chunks")
        if parsed.include_usage:
            usage_info = usage(generation.prompt_tokens, generation.generated, generation.cached_tokens)
            build = chat_chunk if parsed.chat else completion_chunk
            payloads.append(build(request_id, model, created, None, None, usage_info))
        payloads.append(None)
        data, dead = emit(payloads)
        if data:
            yield data
        if dead:
            raise SimulatedDisconnect(f"simulated death after {die_after} chunks")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/reset_prefix_cache", reset_prefix_cache, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/kv_event_sources", kv_event_sources, methods=["GET"]),
        Route("/sim/faults", get_faults, methods=["GET"]),
        Route("/sim/faults", post_faults, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    return Starlette(routes=routes)
