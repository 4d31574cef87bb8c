"""The affinity-drift panel: drift ratio and fleet hit rate over time (plotext), and home moves by
cause. plotext 6 draws into a matrix whose ANSI string is handed to Rich via ``Text.from_ansi``."""

from __future__ import annotations

import plotext
from rich.style import Style
from rich.text import Span, Text
from textual.events import Resize
from textual.widgets import Static

from pcache_console.history import FleetPoint

__all__ = ["DriftChart", "render_chart"]

_HIT_COLOUR = "cyan"
_DRIFT_COLOUR = "yellow"


def _strip_background(text: Text) -> Text:
    """Keep plotext's foreground colours, drop its canvas background so the theme shows through."""
    text.spans = [
        Span(span.start, span.end, Style(color=Style.parse(str(span.style)).color))
        for span in text.spans
        if str(span.style)
    ]
    return text


def render_chart(points: list[FleetPoint], width: int, height: int) -> Text:
    """Draw hit rate and drift ratio (percent) against minutes before the newest point."""
    if width < 20 or height < 6:
        return Text("(too small for the chart)", style="dim")
    series = [p for p in points if p.hit_rate is not None or p.drift_ratio is not None]
    if len(series) < 2:
        return Text("waiting for history…", style="dim")
    newest = series[-1].t
    figure = plotext.figure
    figure.clear()
    figure.plot_size(width, height)
    figure.legend(active=False)
    for attribute, colour in (("hit_rate", _HIT_COLOUR), ("drift_ratio", _DRIFT_COLOUR)):
        pairs = [(p.t, getattr(p, attribute)) for p in series if getattr(p, attribute) is not None]
        if len(pairs) < 2:
            continue
        xs = [(t - newest) / 60 for t, _ in pairs]
        ys = [value * 100 for _, value in pairs]
        marker = plotext.marker("braille", pixel=colour)
        figure.draw(figure.signal(xs, ys, marker=marker).lines())
    figure.ruler("y").lim(0, 100)
    return _strip_background(Text.from_ansi(figure.build().string()))


class DriftChart(Static):
    """Chart plus a legend line and the home moves by cause, re-drawn on new data and on resize."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._points: list[FleetPoint] = []
        self._moves: dict[str, int] = {}
        self._latest_drift: float | None = None

    def show(self, points: list[FleetPoint], moves_by_cause: dict[str, int]) -> None:
        self._points, self._moves = points, moves_by_cause
        self._draw()
        self.call_after_refresh(self._draw)  # again once the layout has settled on a size

    def on_resize(self, event: Resize) -> None:
        self._draw()

    def _draw(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        text = Text()
        text.append("── hit rate %", style=_HIT_COLOUR)
        text.append("   ")
        text.append("── drift %", style=_DRIFT_COLOUR)
        text.append("   x: minutes ago\n", style="dim")
        text.append_text(render_chart(self._points, width, max(height - 3, 0)))
        moves = ", ".join(f"{cause} {count}" for cause, count in sorted(self._moves.items()) if count)
        text.append("\nhome moves: " + (moves or "none"), style="bold" if moves else "dim")
        self.update(text)
