"""The event log view (``e``): the router's events, newest at the bottom, live while open.

The list is the one `pcache events` prints, from the same admin endpoint; the source keeps the
newest few hundred across polls.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from pcache.api import RouterEvent

__all__ = ["EventsScreen", "events_table"]

_KIND_STYLES = {"replica_state": "yellow", "home_moves": "magenta", "prewarm": "cyan"}


def events_table(events: Sequence[RouterEvent]) -> Table:
    """Time (UTC), kind, subject, result and message; an outcome is a word, never colour alone."""
    table = Table(box=None, header_style="bold", expand=True, padding=(0, 1))
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("subject", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("message", ratio=1)
    for event in events:
        result = (
            Text("")
            if event.ok is None
            else (Text("ok", style="green") if event.ok else Text("FAILED", style="bold red"))
        )
        table.add_row(
            datetime.fromtimestamp(event.t, UTC).strftime("%m-%d %H:%M:%S"),
            Text(event.kind, style=_KIND_STYLES.get(event.kind, "")),
            event.replica or event.prefix or event.job or "-",
            result,
            event.message,
        )
    return table


class EventsScreen(Screen[None]):
    """Live while open: the app hands it the events of every new frame."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,e", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[int, int] | None = None  # (count, newest id) on screen
        self._events: Sequence[RouterEvent] = ()

    def compose(self) -> ComposeResult:
        yield Static(Text(" router events (newest last)  Esc returns", style="bold"), id="events-title")
        with VerticalScroll(id="events-scroll"):
            yield Static(id="events-body")
        yield Footer()

    def on_mount(self) -> None:
        self._render_events()

    def show(self, events: Sequence[RouterEvent]) -> None:
        self._events = events
        if self.is_mounted:
            self._render_events()

    def _render_events(self) -> None:
        events = self._events
        key = (len(events), events[-1].id if events else 0)
        if key == self._shown:
            return
        self._shown = key
        body = self.query_one("#events-body", Static)
        body.update(events_table(events) if events else Text("no events yet", style="dim"))
        self.query_one("#events-scroll", VerticalScroll).scroll_end(animate=False)

    def action_back(self) -> None:
        self.app.pop_screen()
