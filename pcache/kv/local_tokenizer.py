"""Tokenize requests in the router, as the engine does: the model's chat template and tokenizer.

From a local model directory (``tokenizer.json``, ``tokenizer_config.json``, optionally
``chat_template.jinja``): the template is rendered the way ``transformers`` renders it (a jinja2
immutable sandbox with ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``, its ``tojson``,
``raise_exception`` and ``strftime_now``, the special tokens as variables), and the text is
encoded with HF ``tokenizers``: chat prompts without added special tokens (the template carries
them; vLLM's default for chat), completion prompts with them (vLLM's default for completions).
Text parts of a message's content are joined with newlines, vLLM's "string" content format.
Only the Rust tokenizer and jinja2 are loaded, not ``transformers``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from pcache.kv.tokens import EngineTokens

__all__ = ["LocalTokenizer", "TokenizerError"]

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class TokenizerError(ValueError):
    """A model directory that cannot be loaded, or a request its template refuses."""


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])  # the older AddedToken form
    return None


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


def _chat_template(directory: Path, config: Mapping[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return template
    path = directory / "chat_template.jinja"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise TokenizerError("'messages' must be a list")
    rendered: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise TokenizerError("each message must be an object")
        content = message.get("content")
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            message = {**message, "content": "\n".join(t for t in texts if isinstance(t, str))}
        rendered.append(message)
    return rendered


class LocalTokenizer:
    """One model's tokenizer and chat template, loaded from ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
            config_path = self.directory / "tokenizer_config.json"
            config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        except Exception as exc:  # tokenizers raises plain Exception for a bad file
            raise TokenizerError(f"cannot load the tokenizer in {self.directory}: {exc}") from None
        self._special = {name: text for name in _SPECIAL if (text := _token_text(config.get(name)))}
        source = _chat_template(self.directory, config)
        self._template = _environment().from_string(source) if source is not None else None

    def render_chat(self, messages: Any, add_generation_prompt: bool = True) -> str:
        """The chat prompt as the engine renders it."""
        if self._template is None:
            raise TokenizerError(f"{self.directory} has no chat template")
        try:
            return self._template.render(
                messages=_messages(messages),
                add_generation_prompt=add_generation_prompt,
                tools=None,
                documents=None,
                **self._special,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise TokenizerError(f"the chat template refused the messages: {exc}") from None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def tokens(self, body: Mapping[str, Any]) -> EngineTokens | None:
        """A chat or completion body's prompt in the engine's token ids (None: not a text prompt)."""
        if "messages" in body:
            text = self.render_chat(body["messages"], body.get("add_generation_prompt", True) is not False)
            return EngineTokens(self.encode(text, bool(body.get("add_special_tokens", False))), "tokenizer")
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            special = body.get("add_special_tokens", True) is not False
            return EngineTokens(self.encode(prompt, special), "tokenizer")
        if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
            return EngineTokens(prompt, "request")
        return None
