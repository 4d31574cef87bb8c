"""The simulator's ``/tokenize``, shaped like vLLM's: a prompt or chat messages in, token ids out.

vLLM answers ``{"count", "max_model_len", "tokens", "token_strs"}``; chat messages are rendered
with the model's chat template and the generation prompt first, exactly as a chat completion is,
so a router that tokenizes through this endpoint sees the ids the engine's KV events carry.
"""

from __future__ import annotations

from typing import Any

from pcache.sim.protocol import RequestError, render_chat
from pcache.sim.tokenizer import CHARS_PER_TOKEN, token_ids

__all__ = ["tokenize_body"]


def tokenize_body(
    body: Any, *, served_model: str, max_model_len: int, chars_per_token: float = CHARS_PER_TOKEN
) -> dict[str, Any]:
    """The response to a ``/tokenize`` request body; raises :class:`RequestError` when it is invalid."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = body.get("model") or served_model
    if model != served_model:
        raise RequestError(f"The model `{model}` does not exist.", status=404, kind="NotFoundError")
    if "messages" in body:
        text = render_chat(body["messages"])
    elif isinstance(body.get("prompt"), str):
        text = body["prompt"]
    else:
        raise RequestError("give 'prompt' (a string) or 'messages'")
    tokens = token_ids(text, chars_per_token=chars_per_token)
    return {"count": len(tokens), "max_model_len": max_model_len, "tokens": tokens, "token_strs": None}
