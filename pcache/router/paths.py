"""Which request paths the data plane serves, decided on the path the replica's server would act on.

A replica's HTTP server (uvicorn/starlette for vLLM and SGLang) percent-decodes the request target and
some stacks also resolve ``..`` and merge slashes. Matching the raw target against a prefix such as
``/v1/`` therefore lets ``/v1/../sim/faults`` or ``/v1/%2e%2e/metrics`` reach a replica's operator
endpoints. :func:`api_path` decodes once, refuses dot segments, double encoding, backslashes and
control characters outright, merges repeated slashes and drops a trailing slash; the result must then
be one of the OpenAI API paths the router means to serve, and it is the normalised path (never the
client's raw bytes) that is forwarded.
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["COMPLETION_PATHS", "MODELS_PATH", "MODEL_PREFIX", "PASSTHROUGH_PATHS", "api_path", "normalise"]

COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
MODELS_PATH = "/v1/models"
# OpenAI-compatible inference endpoints that vLLM and SGLang serve, forwarded to a policy-chosen
# replica without fingerprinting. Nothing outside this set (metrics, cache resets, LoRA loading,
# profiling, the simulator's fault switch) is ever forwarded.
PASSTHROUGH_PATHS = frozenset(
    {
        "/v1/embeddings",
        "/v1/responses",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/rerank",
        "/v1/score",
    }
)
MODEL_PREFIX = MODELS_PATH + "/"
_SERVED = COMPLETION_PATHS | PASSTHROUGH_PATHS | {MODELS_PATH}


def normalise(raw_path: bytes) -> str | None:
    """The path as a replica would route it, or None when it is not a plain path.

    None for: non-ASCII bytes, double percent-encoding, ``.``/``..`` segments (encoded or not),
    backslashes and control characters. Repeated slashes merge and a trailing slash is dropped.
    """
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        decoded = unquote(text, errors="strict") if "%" in text else text
    except UnicodeDecodeError:
        return None
    if "%" in decoded or "\\" in decoded or any(ord(c) < 0x21 or ord(c) == 0x7F for c in decoded):
        return None
    segments = [segment for segment in decoded.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        return None
    return "/" + "/".join(segments)


def api_path(raw_path: bytes) -> str | None:
    """The normalised OpenAI API path this request is for, or None when the router does not serve it."""
    path = normalise(raw_path)
    if path is None:
        return None
    # ``/v1/models/{id}`` retrieves one model; ids may contain slashes (``org/name``).
    return path if path in _SERVED or path.startswith(MODEL_PREFIX) else None
