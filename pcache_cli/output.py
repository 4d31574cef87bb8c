"""Output formats shared by every command (kubectl's ``-o``) and the small rendering helpers they share.

``json`` prints one document with stable keys and raw numbers (the pydantic models dumped with
``mode="json"``, keys sorted); ``yaml`` prints the same document as YAML; ``jsonl`` prints one compact
document per line (one per item for list commands, one per snapshot for ``status --watch``);
``custom-columns=NAME:PATH,...`` prints one aligned text column per NAME, each the value at PATH
(``.errors.upstream``, ``tier1_owned[0]``) in every item's JSON form, as kubectl does. ``table`` and
``wide`` are rich tables on stdout. ``--no-headers`` drops the header row of tables and custom
columns. :func:`emit` is the one place a command hands its result to, so every listing command
speaks every format.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from pcache.operator.kv_levels import KV_CRITICAL, KV_WARN, kv_level

if TYPE_CHECKING:
    from pcache_cli.context import CliContext

__all__ = [
    "KV_CRITICAL",
    "KV_WARN",
    "Column",
    "OutputFormat",
    "OutputOpt",
    "OutputSpec",
    "bar",
    "column_value",
    "dash",
    "emit",
    "jsonable",
    "kv_style",
    "parse_output",
    "percent",
    "print_json",
    "print_jsonl",
    "print_yaml",
    "render_columns",
    "seconds",
    "state_text",
]


class OutputFormat(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    JSONL = "jsonl"
    YAML = "yaml"
    CUSTOM_COLUMNS = "custom-columns"

    @property
    def is_machine(self) -> bool:
        """Formats for scripts: no progress or dialogs on stdout, no colour."""
        return self is not OutputFormat.TABLE and self is not OutputFormat.WIDE


@dataclass(frozen=True)
class Column:
    """One ``custom-columns`` column: its header and the path of its value in an item's JSON form."""

    header: str
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class OutputSpec:
    """A parsed ``-o`` value: the format, and the columns when it is ``custom-columns=...``."""

    format: OutputFormat
    columns: tuple[Column, ...] = ()
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.format.value


OUTPUT_HELP = "table, wide, json, jsonl, yaml or custom-columns=NAME:.path,... (kubectl-style)."

_PATH_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


def _parse_path(text: str) -> tuple[str | int, ...]:
    raw = text.strip()
    if raw.startswith("{") and raw.endswith("}"):
        raw = raw[1:-1]
    steps: list[str | int] = []
    position = 0
    while position < len(raw):
        match = _PATH_STEP.match(raw, position)
        if match is None or match.end() == position:
            raise ValueError(f"bad path {text!r} at {raw[position:]!r} (use .field.sub or .list[0])")
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    if not steps:
        raise ValueError(f"empty path in {text!r}")
    return tuple(steps)


def parse_output(text: str) -> OutputSpec:
    """``-o`` text as an :class:`OutputSpec`; ``ValueError`` with a readable reason otherwise."""
    name, sep, rest = text.partition("=")
    try:
        fmt = OutputFormat(name.strip().lower())
    except ValueError:
        known = ", ".join(f.value for f in OutputFormat)
        raise ValueError(f"unknown output format {text!r} (known: {known})") from None
    if fmt is not OutputFormat.CUSTOM_COLUMNS:
        if sep:
            raise ValueError(f"-o {fmt.value} takes no '=...' (only custom-columns does)")
        return OutputSpec(fmt, text=fmt.value)
    if not rest.strip():
        raise ValueError("custom-columns needs NAME:PATH pairs, e.g. custom-columns=NAME:.name,KV:.kv_usage")
    columns: list[Column] = []
    for pair in rest.split(","):
        header, colon, path = pair.partition(":")
        if not colon or not header.strip():
            raise ValueError(f"custom-columns entry {pair!r} is not NAME:PATH")
        columns.append(Column(header.strip(), _parse_path(path)))
    return OutputSpec(fmt, tuple(columns), text=text)


OutputOpt = Annotated[
    OutputSpec | None,
    typer.Option("--output", "-o", help=OUTPUT_HELP, metavar="FORMAT", parser=parse_output),
]
"""The per-command ``-o``; it overrides the global one (see ``CliContext.output_for``)."""


def jsonable(value: Any) -> Any:
    """Pydantic models (and lists of them) as plain JSON data with every field present.

    Non-finite floats (the ``+Inf`` histogram bucket) become Prometheus' strings ``"+Inf"``,
    ``"-Inf"`` and ``"NaN"``, so the output stays strict JSON.
    """
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json", by_alias=True))
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return value


def print_json(value: Any) -> None:
    """One pretty JSON document on stdout, keys sorted so diffs and scripts stay stable."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2, sort_keys=True, allow_nan=False) + "\n")


def print_jsonl(items: Iterable[Any]) -> None:
    """One compact JSON document per line on stdout."""
    for item in items:
        sys.stdout.write(
            json.dumps(jsonable(item), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
        )
    sys.stdout.flush()


def print_yaml(value: Any) -> None:
    """The JSON document as YAML (block style, keys sorted)."""
    import yaml

    sys.stdout.write(
        yaml.safe_dump(jsonable(value), sort_keys=True, default_flow_style=False, allow_unicode=True)
    )


_MISSING = "<none>"  # kubectl's cell for a path an item does not have


def column_value(item: Any, path: Sequence[str | int]) -> str:
    """The cell at ``path`` in ``item``'s JSON form: scalars as text, lists and maps as compact JSON."""
    value: Any = jsonable(item)
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
            continue
        if isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
            continue
        return _MISSING
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def render_columns(items: Sequence[Any], columns: Sequence[Column], *, headers: bool = True) -> str:
    """Plain aligned text, one line per item (three spaces between columns, as kubectl)."""
    rows = [[column_value(item, column.path) for column in columns] for item in items]
    if headers:
        rows.insert(0, [column.header for column in columns])
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def emit(
    cli: CliContext,
    fmt: OutputFormat,
    *,
    document: Any,
    items: Sequence[Any],
    render: Callable[[bool], RenderableType],
    rows: Sequence[Any] | None = None,
) -> None:
    """Print a command's result in ``fmt``: ``document`` for json/yaml, ``items`` one per line for
    jsonl, ``rows`` (default ``items``) one per line for custom-columns, ``render(wide)`` for the
    rich table (its header row dropped with ``--no-headers``)."""
    if fmt is OutputFormat.JSON:
        print_json(document)
    elif fmt is OutputFormat.YAML:
        print_yaml(document)
    elif fmt is OutputFormat.JSONL:
        print_jsonl(items)
    elif fmt is OutputFormat.CUSTOM_COLUMNS:
        sys.stdout.write(render_columns(items if rows is None else rows, cli.columns, headers=cli.headers))
        sys.stdout.flush()
    else:
        renderable = render(fmt is OutputFormat.WIDE)
        if isinstance(renderable, Table) and not cli.headers:
            renderable.show_header = False
        cli.console().print(renderable)


# ---- cells --------------------------------------------------------------------------------------

STATE_STYLES = {
    "healthy": "green",
    "unhealthy": "red",
    "joining": "cyan",
    "draining": "yellow",
    "drained": "blue",
    "removed": "dim",
    "stale": "magenta",
}


def dash() -> Text:
    return Text("-", style="dim")


def percent(value: float | None, digits: int = 0) -> Text:
    if value is None:
        return dash()
    return Text(f"{value * 100:.{digits}f}%")


def seconds(value: float | None) -> Text:
    """Latency in the unit that reads best: ms below a second, s above."""
    if value is None:
        return dash()
    if value < 1.0:
        return Text(f"{value * 1000:.0f}ms")
    return Text(f"{value:.2f}s")


def state_text(state: str, stale: bool = False) -> Text:
    """The state as a word beside its colour (colour never carries the meaning alone)."""
    word = state.upper() if state != "healthy" else "healthy"
    if stale:
        return Text(f"{word} STALE", style=STATE_STYLES["stale"])
    return Text(word, style=STATE_STYLES.get(state, ""))


_KV_STYLES = {"critical": "red", "warn": "yellow", "ok": "green"}


def kv_style(usage: float) -> str:
    return _KV_STYLES[kv_level(usage)]


def bar(usage: float | None, width: int = 10) -> Text:
    """A KV usage bar with its percentage: yellow from 65%, red from 85%."""
    if usage is None:
        return dash()
    clamped = min(max(usage, 0.0), 1.0)
    filled = round(clamped * width)
    text = Text()
    text.append("█" * filled, style=kv_style(clamped))
    text.append("░" * (width - filled), style="dim")
    text.append(f" {usage * 100:3.0f}%")
    return text
