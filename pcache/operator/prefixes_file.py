"""Read a prewarm prefixes file: plain text, JSONL or YAML, with errors that name the file and line.

- text: one prefix per line; blank lines and ``#`` comments are skipped; a line starting with ``"``
  is a JSON string, so a prompt can contain newlines (``"You are...\\nRules:..."``).
- JSONL: one JSON object per line with ``text`` and optionally ``name``, ``copies``, ``replicas``.
- YAML: a list of such mappings (or plain strings), or a mapping with a ``prefixes:`` list.

The format follows the extension (``.txt``, ``.jsonl``/``.ndjson``, ``.yaml``/``.yml``); any other
extension is JSONL when the first entry is a JSON object and text otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from pcache.api import PrewarmPrefix

__all__ = ["PrefixFileError", "detect_format", "parse_prefixes", "read_prefixes", "read_text_file"]

Format = Literal["text", "jsonl", "yaml"]
_FIELDS = ("name", "text", "copies", "replicas")


class PrefixFileError(ValueError):
    """A prefixes file that cannot be used; ``str()`` is ``FILE:LINE: what is wrong``."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def read_prefixes(path: Path) -> list[PrewarmPrefix]:
    """Read and parse ``path``; raise :class:`PrefixFileError` for unreadable or malformed files."""
    text = read_text_file(path)
    return parse_prefixes(text, source=str(path), fmt=detect_format(path, text))


def read_text_file(path: Path) -> str:
    """The UTF-8 text of ``path``; :class:`PrefixFileError` (``FILE: why``) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PrefixFileError(str(path), None, "no such file") from None
    except UnicodeDecodeError as exc:
        raise PrefixFileError(str(path), None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise PrefixFileError(str(path), None, f"cannot read: {exc.strerror or exc}") from None


def detect_format(path: Path, text: str) -> Format:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "jsonl" if first.startswith("{") else "text"


def parse_prefixes(text: str, source: str = "<prefixes>", fmt: Format = "text") -> list[PrewarmPrefix]:
    """Parse the file's text in the given format into prewarm prefixes (at least one)."""
    if fmt == "yaml":
        prefixes = _parse_yaml(text, source)
    elif fmt == "jsonl":
        prefixes = _parse_jsonl(text, source)
    else:
        prefixes = _parse_text(text, source)
    if not prefixes:
        raise PrefixFileError(source, None, "no prefixes found")
    return prefixes


def _parse_text(text: str, source: str) -> list[PrewarmPrefix]:
    prefixes: list[PrewarmPrefix] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith('"'):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise PrefixFileError(source, number, f"invalid JSON string: {exc.msg}") from None
            if not isinstance(value, str):
                raise PrefixFileError(source, number, "invalid JSON string: not a string")
            if not value:
                raise PrefixFileError(source, number, "empty prefix")
            prefixes.append(_entry({"text": value}, source, number))
        else:
            prefixes.append(_entry({"text": line.rstrip("\r")}, source, number))
    return prefixes


def _parse_jsonl(text: str, source: str) -> list[PrewarmPrefix]:
    prefixes: list[PrewarmPrefix] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PrefixFileError(source, number, f"invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise PrefixFileError(source, number, "invalid JSON: nested too deeply") from None
        if isinstance(value, str):
            value = {"text": value}
        prefixes.append(_entry(value, source, number))
    return _unique(prefixes, source)


def _parse_yaml(text: str, source: str) -> list[PrewarmPrefix]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PrefixFileError(source, line, f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:  # pyyaml composes recursively
        raise PrefixFileError(source, None, "invalid YAML: nested too deeply") from None
    items: Any = data
    items_node = node
    if isinstance(data, dict):
        if set(data) != {"prefixes"}:
            raise PrefixFileError(source, 1, "expected a list of prefixes or a mapping with `prefixes:`")
        items = data["prefixes"]
        assert isinstance(node, yaml.MappingNode)
        items_node = node.value[-1][1]  # a repeated key: yaml keeps the last one
    if not isinstance(items, list):
        raise PrefixFileError(source, 1, "expected a list of prefixes")
    prefixes: list[PrewarmPrefix] = []
    for index, item in enumerate(items):
        line = None
        if isinstance(items_node, yaml.SequenceNode):
            line = items_node.value[index].start_mark.line + 1
        prefixes.append(_entry({"text": item} if isinstance(item, str) else item, source, line))
    return _unique(prefixes, source)


def _entry(value: Any, source: str, line: int | None) -> PrewarmPrefix:
    if not isinstance(value, dict):
        raise PrefixFileError(source, line, "expected an object with `text`")
    unknown = sorted(set(value) - set(_FIELDS), key=str)  # YAML keys need not be strings
    if unknown:
        raise PrefixFileError(source, line, f"unknown field {unknown[0]!r} (known: {', '.join(_FIELDS)})")
    if "text" not in value:
        raise PrefixFileError(source, line, "missing `text`")
    try:
        return PrewarmPrefix.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "entry"
        raise PrefixFileError(source, line, f"{field}: {error['msg']}") from None


def _unique(prefixes: list[PrewarmPrefix], source: str) -> list[PrewarmPrefix]:
    names = [prefix.name for prefix in prefixes if prefix.name]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise PrefixFileError(source, None, f"duplicate prefix name {duplicate!r}")
    return prefixes
