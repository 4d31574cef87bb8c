"""Output formats shared by every command (kubectl's ``-o``) and the small rendering helpers they share.

``json`` prints one document with stable keys and raw numbers (the pydantic models dumped with
``mode="json"``, keys sorted); ``jsonl`` prints one compact document per line (one per item for list
commands, one per snapshot for ``status --watch``). ``table`` and ``wide`` are rich tables on stdout.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.text import Text

from pcache.operator.kv_levels import KV_CRITICAL, KV_WARN, kv_level

__all__ = [
    "KV_CRITICAL",
    "KV_WARN",
    "OutputFormat",
    "OutputOpt",
    "bar",
    "dash",
    "jsonable",
    "kv_style",
    "percent",
    "print_json",
    "print_jsonl",
    "seconds",
    "state_text",
]


class OutputFormat(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    JSONL = "jsonl"

    @property
    def is_machine(self) -> bool:
        return self in (OutputFormat.JSON, OutputFormat.JSONL)


OutputOpt = Annotated[OutputFormat | None, typer.Option("--output", "-o", help="table, wide, json or jsonl.")]
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
