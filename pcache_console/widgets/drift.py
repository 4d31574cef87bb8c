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
    """Keep plotext's foreground colours, drop its canvas background so the theme shows through.

    Adjacent spans of one colour are merged: plotext colours cell by cell, and fewer spans make a
    cheaper paint."""
    spans: list[Span] = []
    for span in text.spans:
        style = span.style if isinstance(span.style, Style) else Style.parse(span.style)
        if style.color is None:
            continue
        if spans and spans[-1].end == span.start and spans[-1].style == style.color.name:
            spans[-1] = Span(spans[-1].start, span.end, spans[-1].style)
        else:
            spans.append(Span(span.start, span.end, style.color.name))
    text.spans = spans
    return text


def render_chart(points: list[FleetPoint], width: int, height: int) -> Text:
    """Draw hit rate and drift ratio (percent) against minutes before the newest point."""
    if width < 20 or height < 6:
        return Text("(too small for the chart)", style="dim")
    series = [p for p in points if p.hit_rate is not None or p.drift_ratio is not None]
    if len(series) < 2:
        return Text("waiting for history…", style="dim")
    newest = series[-1].t
    # The chart goes into a widget, not the terminal: its size is the widget's, whatever the terminal.
    plotext.terminal.limit(width=False, height=False)
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
    chart = _strip_background(Text.from_ansi(figure.build().string()))
    chart.rstrip()  # plotext ends with a newline; the caller lays out the lines
    return chart


class DriftChart(Static):
    """Chart plus a legend line and the home moves by cause, re-drawn on new data and on resize."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._points: list[FleetPoint] = []
        self._moves: dict[str, int] = {}
        self._data_drawn: object = None

    def show(self, points: list[FleetPoint], moves_by_cause: dict[str, int]) -> None:
        drawn = (len(points), points[-1] if points else None, tuple(sorted(moves_by_cause.items())))
        if drawn == self._data_drawn:
            return  # same data: plotting again would only cost time
        self._points, self._moves, self._data_drawn = points, moves_by_cause, drawn
        self._draw()

    def on_resize(self, event: Resize) -> None:
        self._draw()

    def _draw(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        if not width or not height:
            return  # not laid out yet: on_resize draws once it is
        text = Text()
        text.append("── hit rate %", style=_HIT_COLOUR)
        text.append("   ")
        text.append("── drift %", style=_DRIFT_COLOUR)
        text.append("   x: minutes ago\n", style="dim")
        text.append_text(render_chart(self._points, width, max(height - 2, 0)))
        moves = ", ".join(f"{cause} {count}" for cause, count in sorted(self._moves.items()) if count)
        text.append("\nhome moves: " + (moves or "none"), style="bold" if moves else "dim")
        self.update(text)
