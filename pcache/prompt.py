"""Request body -> :class:`~pcache.fingerprint.Fingerprint`.

The prompt is rendered deterministically and *concatenatively*: a chat renders as the concatenation
of its rendered messages, so a Tier-1 prefix given as text and rendered as a system message (or as
completion text) produces exactly the leading blocks of every real request that starts with it.
The rendering is cut into fixed-size character chunks whose 64-bit xxhash values are chained (each
chunk is hashed with the previous hash as seed), so two prompts share their first k block hashes
exactly when they share their first k chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
import xxhash

from pcache.fingerprint import Fingerprint, SessionSource

__all__ = [
    "MAX_SESSION_KEY_CHARS",
    "FingerprintConfig",
    "PromptError",
    "Tier1Index",
    "bounded_session_key",
    "chain_blocks",
    "fingerprint_request",
    "prefix_blocks",
    "render_chat",
    "render_message",
    "rendered_prefix",
]

_hash = xxhash.xxh3_64_intdigest
MAX_SESSION_KEY_CHARS = 128


class PromptError(ValueError):
    """The request body cannot be fingerprinted (malformed, empty or of the wrong shape)."""


@dataclass(frozen=True, slots=True)
class FingerprintConfig:
    """How requests are fingerprinted.

    ``chunk_chars`` characters make one block (256 chars ~ 64 tokens at ~4 chars/token).
    ``tokenizer``, when set, counts tokens exactly; otherwise the count is chars / ``chars_per_token``.
    """

    chunk_chars: int = 256
    chars_per_token: float = 4.0
    session_header: str = "x-session-id"
    tokenizer: Callable[[str], int] | None = None

    def __post_init__(self) -> None:
        if self.chunk_chars < 1:
            raise ValueError("chunk_chars must be >= 1")
        if self.chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")

    @property
    def block_tokens(self) -> int:
        """Tokens per block, as estimated for weighting cache hits."""
        return max(1, round(self.chunk_chars / self.chars_per_token))

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return self.tokenizer(text)
        return max(1, round(len(text) / self.chars_per_token)) if text else 0


def chain_blocks(text: str, chunk_chars: int, *, full_only: bool = False) -> tuple[int, ...]:
    """Chained 64-bit hashes of ``text`` cut into ``chunk_chars`` chunks.

    A trailing partial chunk is included unless ``full_only`` (engines cache only full blocks, and a
    prefix must only claim the blocks every longer prompt shares with it).
    """
    blocks: list[int] = []
    previous = 0
    end = len(text) - len(text) % chunk_chars if full_only else len(text)
    for start in range(0, end, chunk_chars):
        previous = _hash(text[start : start + chunk_chars].encode("utf-8", "surrogatepass"), previous)
        blocks.append(previous)
    return tuple(blocks)


def _canonical_json(value: object) -> str:
    """Compact JSON with sorted keys; orjson (fast), or json for what orjson refuses."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _part_identity(part: Mapping[str, object], kind: object) -> str:
    """An image, audio or file part as text: its identity (URL, data or id), not its meaning.

    Read straight from the part for the OpenAI shapes, so a request of many parts costs no JSON
    encoding per part; any other shape is encoded canonically.
    """
    value = part.get(kind) if isinstance(kind, str) else None
    if isinstance(value, str):
        return f"<{kind}:{value}>"
    if isinstance(value, Mapping):
        for key in ("url", "data", "file_id", "file_data"):
            identity = value.get(key)
            if isinstance(identity, str):
                return f"<{kind}:{identity}>"
    return _canonical_json(part)


def _content_text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts: list[str] = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping):
                raise PromptError(f"{where}.content[{i}] must be an object, got {type(part).__name__}")
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise PromptError(f"{where}.content[{i}].text must be a string")
                parts.append(text)
            else:
                parts.append(_part_identity(part, kind))
        return "".join(parts)
    raise PromptError(f"{where}.content must be a string or a list of parts, got {type(content).__name__}")


def render_message(message: object, where: str = "message") -> str:
    """One chat message as text; a chat renders as the concatenation of its messages."""
    if not isinstance(message, Mapping):
        raise PromptError(f"{where} must be an object, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise PromptError(f"{where}.role must be a non-empty string")
    text = _content_text(message.get("content"), where)
    tool_calls = message.get("tool_calls")
    if tool_calls:
        text += _canonical_json(tool_calls)
    return f"<|{role}|>\n{text}\n"


def _render_tools(tools: object) -> str:
    return render_message({"role": "tools", "content": json.dumps(tools, sort_keys=True)}) if tools else ""


def render_chat(messages: Sequence[object], tools: object = None) -> str:
    """A whole chat as text: tool definitions (if any) first, then every message in order."""
    return _render_tools(tools) + "".join(render_message(m, f"messages[{i}]") for i, m in enumerate(messages))


def bounded_session_key(key: str) -> str:
    """A session key the router can keep: short keys as given, longer ones as a fixed-size hash.

    Keys come from clients (a header, the ``user`` field) and live as long as their session home;
    keeping a 5 MB ``user`` value whole made 30 requests cost 183 MB.
    """
    if len(key) <= MAX_SESSION_KEY_CHARS:
        return key
    return "h" + xxhash.xxh3_128_hexdigest(key.encode("utf-8", "surrogatepass"))


def prefix_blocks(
    text: str, as_: Literal["chat", "completion"] = "chat", config: FingerprintConfig | None = None
) -> tuple[int, ...]:
    """The full blocks of a Tier-1 prefix, rendered as real requests that start with it render it.

    ``as_="chat"`` renders the text as a system message; ``"completion"`` as raw prompt text.
    """
    config = config or FingerprintConfig()
    return chain_blocks(rendered_prefix(text, as_), config.chunk_chars, full_only=True)


def rendered_prefix(text: str, as_: Literal["chat", "completion"] = "chat") -> str:
    """A Tier-1 prefix as the start of a real request renders it (a system message, or raw text)."""
    if as_ == "chat":
        return render_message({"role": "system", "content": text})
    if as_ == "completion":
        return text
    raise ValueError(f"as_ must be 'chat' or 'completion', not {as_!r}")


class Tier1Index:
    """Matches a request's blocks against registered Tier-1 prefixes.

    Lookup is one dict probe per distinct registered length (longest first), not a scan over
    prefixes: a prefix of k blocks matches exactly when the request's k-th block hash equals the
    prefix's last hash, because hashes are chained.
    """

    __slots__ = ("_by_length", "_lengths")

    def __init__(self, prefixes: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]] = ()):
        self._by_length: dict[int, dict[int, str]] = {}
        self._lengths: tuple[int, ...] = ()
        items = prefixes.items() if isinstance(prefixes, Mapping) else prefixes
        for name, blocks in items:
            self.add(name, blocks)

    def add(self, name: str, blocks: Sequence[int]) -> None:
        """Register a prefix; an empty prefix (shorter than one block) can never match."""
        if not blocks:
            return
        self._by_length.setdefault(len(blocks), {})[blocks[-1]] = name
        self._lengths = tuple(sorted(self._by_length, reverse=True))

    def match(self, blocks: Sequence[int]) -> tuple[str, int] | None:
        """The longest registered prefix the blocks start with, as (name, length), or None."""
        n = len(blocks)
        for length in self._lengths:
            if length <= n:
                name = self._by_length[length].get(blocks[length - 1])
                if name is not None:
                    return name, length
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_length.values())


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                value = candidate
                break
    return value or None


def _completion_text(prompt: object) -> str:
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        # A batch goes to one replica; its first prompt decides the prefix.
        text = prompt[0]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        text = " ".join(str(t) for t in prompt)
    else:
        raise PromptError("prompt must be a non-empty string, list of strings or list of token ids")
    if not text:
        raise PromptError("prompt is empty")
    return text


def _derived_chat_session(messages: Sequence[object], rendered: Sequence[str]) -> str:
    """From the first system and the first user message (``rendered[i]`` renders ``messages[i]``)."""
    first: dict[str, str] = {}
    for message, text in zip(messages, rendered, strict=True):
        if isinstance(message, Mapping):
            role = message.get("role")
            if role in ("system", "user") and role not in first:
                first[str(role)] = text
        if len(first) == 2:
            break
    seed = first.get("system", "") + first.get("user", "")
    return f"d{_hash(seed.encode('utf-8', 'surrogatepass')):016x}"


def fingerprint_request(
    body: object,
    headers: Mapping[str, str] | None = None,
    config: FingerprintConfig | None = None,
    tier1_index: Tier1Index | None = None,
) -> Fingerprint:
    """Fingerprint an OpenAI chat (``messages``) or completion (``prompt``) request body.

    The session key comes from the configured header, else the ``user`` field, else it is derived:
    from the first system and user messages of a chat, or from the first block beyond any Tier-1
    prefix of a completion. Raises :class:`PromptError` on anything that is not such a body.
    """
    config = config or FingerprintConfig()
    if not isinstance(body, Mapping):
        raise PromptError(f"request body must be a JSON object, got {type(body).__name__}")
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise PromptError(f"messages must be a list, got {type(messages).__name__}")
        if not messages:
            raise PromptError("messages is empty")
        try:
            rendered = [render_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
            text = _render_tools(body.get("tools")) + "".join(rendered)
        except RecursionError:  # json.dumps of hostile, deeply nested parts, tools or tool calls
            raise PromptError("messages, tools or tool_calls are nested too deeply") from None
    elif "prompt" in body:
        text = _completion_text(body["prompt"])
        rendered = None
    else:
        raise PromptError("request body has neither 'messages' nor 'prompt'")

    blocks = chain_blocks(text, config.chunk_chars)
    tier1: str | None = None
    tier1_blocks = 0
    if tier1_index is not None:
        matched = tier1_index.match(blocks)
        if matched is not None:
            tier1, tier1_blocks = matched

    session = _header(headers, config.session_header)
    source = SessionSource.HEADER
    if session is None:
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise PromptError(f"user must be a string, got {type(user).__name__}")
        session, source = (user, SessionSource.USER) if user else (None, SessionSource.NONE)
    if session is None:
        if rendered is not None:
            session = _derived_chat_session(body["messages"], rendered)
        else:
            session = f"d{blocks[min(tier1_blocks, len(blocks) - 1)]:016x}"
        source = SessionSource.DERIVED

    return Fingerprint(
        blocks=blocks,
        session=bounded_session_key(session),
        prompt_tokens=config.count_tokens(text),
        tier1=tier1,
        tier1_blocks=tier1_blocks,
        block_tokens=config.block_tokens,
        session_source=source,
        prompt_chars=len(text),
    )
