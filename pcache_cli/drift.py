"""`pcache drift`: how often sessions lose their home, why, and what it costs in hit rate."""

from __future__ import annotations

import re
import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pcache.api import DriftSeries
from pcache_cli.common import ExitCode, fail
from pcache_cli.context import get_context
from pcache_cli.output import OutputOpt, emit, percent

__all__ = ["drift_chart", "nice_ticks", "parse_duration", "register", "render_drift"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"15m"``, ``"1h30m"``, ``"90s"`` or plain seconds (``"900"``) -> seconds; ValueError otherwise."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {text!r} (try 90s, 15m, 1h)") from None
        seconds = sum(float(number) * _UNIT[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return seconds


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top`` (a percentage): steps of 1, 2, 2.5 or 5 x 10^n."""
    import math

    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(i * step, 10) for i in range(math.ceil(top / step - 1e-9) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:g}%"


_DRIFT_MARK, _HIT_MARK = "drift ratio", "fleet hit rate"


def drift_chart(series: DriftSeries, width: int = 78, height: int = 14, color: bool = True) -> Text:
    """Drift ratio and hit rate (in %) over the window, drawn by plotext as text.

    Only windows with session traffic are drawn (none before the router started, not a flat 0%);
    the y axis has round percentage ticks; the legend is a line under the plot, never on it.
    """
    import plotext

    figure = plotext.figure
    now = series.points[-1].t if series.points else time.time()
    drift = [((p.t - now) / 60.0, p.drift_ratio * 100) for p in series.points if p.drift_ratio is not None]
    hits = [((p.t - now) / 60.0, p.hit_rate * 100) for p in series.points if p.hit_rate is not None]
    figure.clear()
    try:
        figure.plot_size(width, height)
        figure.theme("default" if color else "colorless")
        for points in (drift, hits):
            if points:
                figure.draw(figure.signal([m for m, _ in points], [v for _, v in points]).lines())
        figure.legend(active=False)  # ours goes under the plot
        ticks = nice_ticks(max([v for _, v in drift + hits], default=0.0))
        y_axis = figure.ruler("y")
        y_axis.lim(0, ticks[-1])
        y_axis.ticks(ticks, [_tick_label(t) for t in ticks])
        figure.title("drift ratio and fleet hit rate (%)")
        figure.label("minutes ago", "x")
        rendered = figure.build().string(colorless=not color)
    finally:
        figure.clear()
    chart = Text.from_ansi(rendered)
    legend = Text(f"  ━━ {_DRIFT_MARK} (first colour)   ━━ {_HIT_MARK} (second colour)", style="dim")
    if not drift:
        legend.append("   no session traffic in the window yet", style="dim")
    return Text.assemble(chart, "\n", legend)


def render_drift(
    series: DriftSeries, since_s: float, chart: bool = True, color: bool = True
) -> RenderableType:
    """Summary line, moves by cause, and the chart."""
    moves = sum(point.moves for point in series.points)
    session_requests = sum(point.session_requests for point in series.points)
    ratio = moves / session_requests if session_requests else None
    head = Text()
    head.append(f"last {_human(since_s)}: ", style="dim")
    head.append("drift ratio ")
    head.append_text(percent(ratio, 2))
    head.append(f"  ({moves} home moves / {session_requests} session requests)", style="dim")
    parts: list[RenderableType] = [head]
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("CAUSE", no_wrap=True)
    table.add_column("MOVES", justify="right", no_wrap=True)
    table.add_column("SHARE", justify="right", no_wrap=True)
    total_moves = sum(series.moves_by_cause.values())
    for cause, count in sorted(series.moves_by_cause.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(cause, str(count), percent(count / total_moves if total_moves else None))
    parts += [Text(""), table] if series.moves_by_cause else [Text("no home moves", style="dim")]
    if chart and len(series.points) >= 2:
        parts += [Text(""), drift_chart(series, color=color)]
    elif chart:
        parts.append(Text("not enough points for a chart yet", style="dim"))
    return Group(*parts)


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Fleet")
    def drift(
        ctx: typer.Context,
        since: Annotated[str, typer.Option(help="Window to show: 90s, 15m, 1h, ...")] = "15m",
        chart: Annotated[bool, typer.Option("--chart/--no-chart", help="Draw the chart.")] = True,
        output: OutputOpt = None,
    ) -> None:
        """Drift ratio and session home moves by cause, with a chart over time.

        Examples:

          pcache drift

          pcache drift --since 1h

          pcache drift -o jsonl | jq .drift_ratio
        """
        cli = get_context(ctx)
        try:
            since_s = parse_duration(since)
        except ValueError as exc:
            fail(f"--since: {exc}", ExitCode.USAGE)
        with cli.admin() as client:
            series = client.drift(since_s=since_s)
        fmt = cli.output_for(output)
        emit(
            cli,
            fmt,
            document=series,
            items=series.points,
            render=lambda _wide: render_drift(series, since_s, chart=chart, color=cli.color),
        )
