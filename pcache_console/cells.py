"""How one value looks in a cell: KV bars, percentages, states, shades and text sparklines.

Colour never carries meaning alone: every colour has a word or a glyph beside it, so the console
reads the same under ``NO_COLOR``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Span, Text

from pcache.api import ReplicaStatus
from pcache.operator.kv_levels import KV_CRITICAL, KV_WARN

__all__ = [
    "ERROR_RATE_WARNING",
    "KV_CRITICAL",
    "KV_WARNING",
    "SPARK_GLYPHS",
    "error_rate",
    "heat_level",
    "heat_number",
    "heat_strip",
    "kv_bar",
    "number",
    "percent",
    "rate",
    "seconds",
    "spark",
    "state_label",
    "tier_bar",
]

KV_WARNING = KV_WARN  # the thresholds of `pcache status`'s KV bar, so both colour alike
ERROR_RATE_WARNING = 0.05  # the router's error call-out threshold
SPARK_GLYPHS = " ▁▂▃▄▅▆▇█"
_SHADES = (" ", "░", "▒", "▓", "█")
_CELL_STYLES = ("", "on blue", "black on cyan", "black on yellow", "bold white on red")


def percent(value: float | None, digits: int = 1) -> str:
    """A ratio 0..1 as ``64.2%``; ``-`` when unknown."""
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def seconds(value: float | None) -> str:
    """A duration in ms below one second, else in seconds; ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def rate(value: float | None) -> str:
    """Requests per second with one decimal."""
    return "-" if value is None else f"{value:.1f}"


def error_rate(value: float | None) -> Text:
    """A recent error rate: ``0%`` plain, red with a ``!`` from 5%, ``-`` when there was no work."""
    if value is None:
        return Text("-", style="dim")
    shown = f"{value * 100:.0f}%" if value >= 0.1 or value == 0 else f"{value * 100:.1f}%"
    if value >= ERROR_RATE_WARNING:
        return Text(f"{shown}!", style="bold red")
    return Text(shown, style="yellow" if value > 0 else "")


def number(value: int | None) -> str:
    return "-" if value is None else str(value)


def kv_bar(usage: float | None, width: int = 10) -> Text:
    """A KV-cache usage bar: yellow from 65%, red from 85%, with the word ``high``/``FULL`` beside it."""
    if usage is None:
        return Text("-".ljust(width + 10), style="dim")
    usage = min(max(usage, 0.0), 1.0)
    filled = round(usage * width)
    if usage >= KV_CRITICAL:
        style, word = "bold red", "FULL"
    elif usage >= KV_WARNING:
        style, word = "yellow", "high"
    else:
        style, word = "green", ""
    text = Text()
    text.append("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {usage * 100:3.0f}% ")
    text.append(f"{word:<4}", style=style)
    return text


_TIER_STYLES = {"gpu": "green", "host": "cyan", "disk": "magenta", "peer": "yellow", "pool": "blue"}


def tier_bar(by_tier: dict[str, float] | None, width: int = 20) -> Text:
    """The hit rate split by KV tier as one bar (GPU green, host cyan, pool blue, ...), then each
    tier's share in words; ``-`` when the engine does not report tiers."""
    if by_tier is None:
        return Text("-", style="dim")
    text = Text()
    used = 0
    for tier, style in _TIER_STYLES.items():
        cells = min(width - used, round(by_tier.get(tier, 0.0) * width))
        text.append("█" * cells, style=style)
        used += cells
    text.append("░" * (width - used), style="dim")
    words = [f"{tier} {share * 100:.0f}%" for tier, share in by_tier.items() if share > 0]
    text.append(" " + (" ".join(words) if words else "no hits"))
    return text


def state_label(replica: ReplicaStatus) -> Text:
    """The replica's state as a word: UP, DOWN, STALE, JOINING, DRAINING, DRAINED, REMOVED."""
    if replica.stale and replica.state in ("healthy", "draining"):
        return Text("STALE", style="bold magenta")
    return {
        "healthy": Text("UP", style="green"),
        "unhealthy": Text("DOWN", style="bold red"),
        "joining": Text("JOINING", style="cyan"),
        "draining": Text("DRAINING", style="yellow"),
        "drained": Text("DRAINED", style="dim"),
        "removed": Text("REMOVED", style="dim"),
    }[replica.state]


def spark(values: Sequence[float | None], width: int = 12, top: float = 1.0) -> str:
    """A text sparkline of the last ``width`` values (0..top); gaps where a value is unknown."""
    tail = list(values)[-width:]
    steps = len(SPARK_GLYPHS) - 1
    glyphs = []
    for value in tail:
        if value is None:
            glyphs.append(" ")
            continue
        level = round(min(max(value / top, 0.0), 1.0) * steps) if top > 0 else 0
        glyphs.append(SPARK_GLYPHS[max(level, 1)])
    return "".join(glyphs).rjust(width)


def heat_level(share: float) -> int:
    """The shade (0 blank .. 4 full) for a share of a prefix's traffic."""
    return 0 if share <= 0 else min(len(_SHADES) - 1, 1 + int(share * (len(_SHADES) - 1)))


def heat_number(share: float) -> str:
    """A share of traffic as two characters: ``45`` (percent), ``██`` for all of it, blank for none."""
    if share <= 0:
        return "  "
    percent_ = round(share * 100)
    return "██" if percent_ >= 100 else f"{max(percent_, 1):2d}"


def heat_strip(cells: Sequence[tuple[int, str, float]]) -> Text:
    """A heat-map row: per replica its share of the prefix's traffic as a two-digit percent on a
    background shaded by level, then ``P`` (pinned), ``o`` (owner) or a blank. The number carries
    the meaning; the shade only makes hot spots easy to find. One Text per row keeps a 200 x 64
    map cheap to update and paint."""
    parts: list[str] = []
    spans: list[Span] = []
    for index, (level, mark, share) in enumerate(cells):
        parts.append(heat_number(share) + mark)
        start = index * 3
        if level:
            spans.append(Span(start, start + 2, _CELL_STYLES[level]))
        if mark != " ":
            spans.append(Span(start + 2, start + 3, "bold"))
    return Text("".join(parts), spans=spans)
