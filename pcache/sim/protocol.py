"""OpenAI request validation and response shapes as vLLM's OpenAI server produces them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ParsedRequest",
    "RequestError",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "new_id",
    "parse_request",
    "render_chat",
    "usage",
]


class RequestError(ValueError):
    """A request vLLM would reject; carries the HTTP status and the error type."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    """vLLM's error envelope: ``{"error": {"message", "type", "param", "code"}}`` (code = HTTP status)."""
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the engine needs from a completions or chat request."""

    chat: bool
    model: str
    prompt: str
    prompt_tokens: int | None  # set when the prompt came as token ids
    max_tokens: int | None
    stream: bool
    include_usage: bool


def _render_content(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise RequestError(f"messages[{index}].content parts must be objects with a 'type'")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise RequestError(f"messages[{index}].content text part needs a string 'text'")
                texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(f"messages[{index}].content must be a string, a list of parts or null")


def render_chat(messages: Any) -> str:
    """Render chat messages with a ChatML-style template plus the assistant generation prompt."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    parts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{index}] must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(f"messages[{index}].role must be a non-empty string")
        parts.append(f"<|im_start|>{role}\n{_render_content(message.get('content'), index)}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _prompt_text(prompt: Any) -> tuple[str, int | None]:
    if isinstance(prompt, str):
        return prompt, None
    if isinstance(prompt, list) and prompt:
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0], None
        if all(isinstance(token, int) and not isinstance(token, bool) for token in prompt):
            # token ids: four hex characters each, so the simulator's tokenizer sees one token per id
            return "".join(f"{token & 0xFFFF:04x}" for token in prompt), len(prompt)
        if all(isinstance(item, str | list) for item in prompt):
            raise RequestError("the simulator serves one prompt per request (batched prompts unsupported)")
    raise RequestError("'prompt' must be a string, a list with one string, or a list of token ids")


def _optional_int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{key}' must be an integer")
    if value < minimum:
        raise RequestError(f"'{key}' must be at least {minimum}, got {value}")
    return value


def parse_request(body: Any, *, chat: bool, served_model: str) -> ParsedRequest:
    """Validate a request body the way vLLM does; raise :class:`RequestError` on anything invalid."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = body.get("model", served_model)
    if model is None:
        model = served_model
    if not isinstance(model, str):
        raise RequestError("'model' must be a string")
    if model != served_model:
        raise RequestError(f"The model `{model}` does not exist.", status=404, kind="NotFoundError")
    if chat:
        if "messages" not in body:
            raise RequestError("'messages' is required")
        prompt, prompt_tokens = render_chat(body["messages"]), None
    else:
        if "prompt" not in body:
            raise RequestError("'prompt' is required")
        prompt, prompt_tokens = _prompt_text(body["prompt"])
    max_tokens = _optional_int(body, "max_tokens", 1)
    if chat:
        max_completion = _optional_int(body, "max_completion_tokens", 1)
        max_tokens = max_completion if max_completion is not None else max_tokens
    n = _optional_int(body, "n", 1)
    if n not in (None, 1):
        raise RequestError("the simulator supports only n=1")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise RequestError("Stream options can only be defined when `stream=True`.")
        if not isinstance(options, dict):
            raise RequestError("'stream_options' must be an object")
        include_usage = bool(options.get("include_usage", False))
    return ParsedRequest(chat, model, prompt, prompt_tokens, max_tokens, stream, include_usage)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """The ``usage`` object, with ``prompt_tokens_details.cached_tokens`` from the prefix cache."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def new_id(chat: bool) -> str:
    """A fresh response id in vLLM's style."""
    return ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(16)


def chat_response(
    request_id: str, model: str, text: str, finish_reason: str, usage_info: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed ``chat.completion``."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage_info,
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }


def completion_response(
    request_id: str, model: str, text: str, finish_reason: str, usage_info: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed ``text_completion``."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
        ],
        "usage": usage_info,
        "kv_transfer_params": None,
    }


def chat_chunk(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` makes the final usage-only chunk (no choices)."""
    chunk: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_info is not None:
        chunk["usage"] = usage_info
    return chunk


def completion_chunk(
    request_id: str,
    model: str,
    created: int,
    text: str | None,
    finish_reason: str | None = None,
    usage_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A streamed ``text_completion`` chunk; ``text=None`` makes the final usage-only chunk."""
    chunk: dict[str, Any] = {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": []
        if text is None
        else [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_info is not None:
        chunk["usage"] = usage_info
    return chunk
