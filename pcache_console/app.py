"""``pcache top``: the Textual app that watches the fleet and acts on it.

One worker polls the source (one shared HTTP client), schedules the next poll after the last one
finishes, and skips polls only while paused (dialogs keep the data live). Every action (drain, undrain, pin,
unpin, prewarm, in :mod:`pcache_console.actions`) goes through a modal that opens with the focus on
Cancel, then through the admin client; its result lands in the flash line under the header.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static

from pcache.api import PrefixRow, StatusSnapshot
from pcache.client import AdminClient, AdminError
from pcache.drain_capacity import DrainCapacity, drain_capacity
from pcache_console import actions
from pcache_console.history import Backfill, History
from pcache_console.screens.events import EventsScreen
from pcache_console.screens.help import HelpScreen
from pcache_console.screens.replica import ReplicaScreen
from pcache_console.source import Frame, Source
from pcache_console.widgets.drift import DriftChart
from pcache_console.widgets.fleet import ALL_ROW, SORTS, FleetTable
from pcache_console.widgets.header import StatusHeader
from pcache_console.widgets.heatmap import HeatMap, PrefixDetail
from pcache_console.widgets.rows import RowTable

__all__ = ["REFRESH_STEPS", "ROUTER_ACTIONS", "TopApp"]

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
ROUTER_ACTIONS = frozenset({"drain", "undrain", "pin", "unpin", "prewarm"})
# Keys of the main screen, off while a dialog is up (so space or / cannot act behind it).
_MAIN_SCREEN_ACTIONS = ROUTER_ACTIONS | {
    "events",
    "sort_heat",
    "help",
    "filter",
    "clear_filter",
    "pause",
    "slower",
    "faster",
    "sort",
}
HistoryLoader = Callable[[StatusSnapshot], Backfill]
_CALLOUT_LINES = 3  # the call-out box's height


@dataclass(frozen=True)
class _SortKey:
    key: str
    sort: str


_SORT_KEYS = (
    _SortKey("N", "name"),
    _SortKey("S", "state"),
    _SortKey("K", "kv"),
    _SortKey("H", "hit"),
    _SortKey("T", "ttft"),
    _SortKey("W", "waiting"),
    _SortKey("E", "sessions"),
    _SortKey("R", "rps"),
)


class TopApp(App[None]):
    """The live console. ``source`` decides router or direct mode; ``clock`` is injectable for tests."""

    CSS_PATH = "top.tcss"
    TITLE = "pcache top"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        # Textual's default Ctrl-C only hints at ctrl+q; an operator (and `pcache demo`) expects it to quit.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("space", "pause", "Pause"),
        Binding("plus", "slower", "Slower", key_display="+", show=False),
        Binding("minus", "faster", "Faster", key_display="-", show=False),
        Binding("d", "drain", "Drain"),
        Binding("U", "undrain", "Undrain"),
        Binding("p", "pin", "Pin"),
        Binding("u", "unpin", "Unpin"),
        Binding("w", "prewarm", "Prewarm"),
        Binding("e", "events", "Events"),
        Binding("o", "sort_heat", "Sort heat map", show=False),
        *(Binding(s.key, f"sort('{s.sort}')", f"Sort {s.sort}", show=False) for s in _SORT_KEYS),
    ]

    def __init__(
        self,
        source: Source,
        *,
        refresh_s: float = 2.0,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        history_loader: HistoryLoader | None = None,
        window_s: float = 900.0,
        freeze_gc: bool = False,
    ) -> None:
        """``freeze_gc``: after mounting, exempt the app's long-lived objects from full garbage
        collections (``gc.freeze``). For a process that runs one console, as ``pcache top`` does."""
        super().__init__()
        self._freeze_gc = freeze_gc
        self.source = source
        self.refresh_s = min(max(refresh_s, REFRESH_STEPS[0]), REFRESH_STEPS[-1])
        self.readonly = readonly
        self.paused = False
        self.history = History(window_s=window_s)
        self.frame: Frame | None = None
        self.polls = 0  # successful polls, for tests and the bench
        self._clock = clock
        self._history_loader = history_loader
        self._last_ok: float | None = None
        self._poll_error: str | None = None
        self._warnings: tuple[str, ...] = ()
        self._wake = asyncio.Event()

    # ---- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        yield Static(id="flash")
        yield FleetTable(id="fleet")
        yield Static(id="callouts")
        with Horizontal(id="lower"):
            with Vertical(id="heat-panel"):
                yield HeatMap(id="heat")
                yield PrefixDetail(id="detail")
            yield DriftChart(id="drift")
        yield Input(placeholder="filter replicas (Enter keeps, Esc clears)", id="filter")
        yield Footer()

    @property
    def fleet(self) -> FleetTable:
        return self.query_one("#fleet", FleetTable)

    @property
    def heat(self) -> HeatMap:
        return self.query_one("#heat", HeatMap)

    def on_mount(self) -> None:
        self.fleet.focus()
        self.query_one("#heat-panel").border_title = "prefix heat map: % of requests (o owner, P pinned)"
        self.query_one("#drift").border_title = "affinity drift"
        self.query_one("#detail", PrefixDetail).show(None)
        self._render_header()
        self.set_interval(1.0, self._render_header)
        self.run_worker(self._poll_loop(), name="poll", group="poll", exclusive=True)
        if self._freeze_gc:
            # Everything built so far (Textual's DOM, styles, this app) lives as long as the process:
            # keep it out of the garbage collector's full passes, which otherwise stall refreshes.
            gc.freeze()

    # ---- polling ------------------------------------------------------------------------------

    def _modal_open(self) -> bool:
        return isinstance(self.screen, ModalScreen)

    async def _poll_loop(self) -> None:
        while True:
            if not self.paused:  # dialogs too: the data behind them (and their numbers) stays live
                await self.poll_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.refresh_s)

    def poll_now(self) -> None:
        """Poll at once instead of at the end of the interval (after an action)."""
        self._wake.set()

    async def poll_once(self) -> None:
        try:
            frame = await self.source.poll()
        except (AdminError, ValueError) as exc:  # ValueError: a body that is not the API's JSON
            if not self.is_running:
                return
            if self._poll_error is None:
                self.flash(f"{exc} (retrying every {self.refresh_s:g}s)", error=True)
            self._poll_error = str(exc)
            self._render_header()
            return
        if not self.is_running:
            return  # the app closed while the poll was out: its widgets are gone
        if self._poll_error is not None:
            self.flash("router answering again")
        self._poll_error = None
        first = self._last_ok is None
        self.apply(frame)
        if first and self._history_loader is not None:
            self.run_worker(self._backfill(frame.status), name="history", group="history")

    def apply(self, frame: Frame) -> None:
        """Show one frame: record history, update every widget in place."""
        self.frame = frame
        self._last_ok = self._clock()
        self.polls += 1
        self.history.record(frame)
        self.fleet.show(frame.status, self.history)
        self._show_callouts(frame.status.callouts)
        if frame.heat is not None:
            self.heat.show(frame.heat, [r.name for r in frame.status.replicas])
            self.query_one("#detail", PrefixDetail).show(self.heat.selected)
        self.query_one("#drift", DriftChart).show(self.history.fleet(), self.history.moves_by_cause)
        if frame.warnings and frame.warnings != self._warnings:
            self.flash("; ".join(frame.warnings), error=True)  # once, not on every poll
        self._warnings = frame.warnings
        self._render_header()
        if isinstance(self.screen, ReplicaScreen):
            self.screen.show(frame, self.history)
        elif isinstance(self.screen, EventsScreen):
            self.screen.show(frame.events)

    def _show_callouts(self, callouts: list[str]) -> None:
        """vllm-htop-style call-outs that name the replica, the router's most urgent first (errors,
        then down, then imbalance); past three lines, the last says how many more there are."""
        box = self.query_one("#callouts", Static)
        box.display = bool(callouts)
        shown = callouts if len(callouts) <= _CALLOUT_LINES else callouts[: _CALLOUT_LINES - 1]
        text = Text(no_wrap=True, overflow="ellipsis")  # one line each, or "+N more" falls off
        for index, callout in enumerate(shown):
            text.append("\n" if index else "")
            text.append(" ! ", style="bold yellow")
            text.append(callout)
        if hidden := len(callouts) - len(shown):
            text.append(f"\n   +{hidden} more (pcache status lists them all)", style="dim")
        box.update(text)

    async def _backfill(self, status: StatusSnapshot) -> None:
        assert self._history_loader is not None
        try:
            backfill = await asyncio.to_thread(self._history_loader, status)
        except Exception as exc:  # the history is a bonus: say why it is missing, keep going live
            self.flash(f"no history from Prometheus: {exc}", error=True)
            return
        self.history.backfill(backfill)
        self.query_one("#drift", DriftChart).show(self.history.fleet(), self.history.moves_by_cause)
        if self.frame is not None:
            self.fleet.show(self.frame.status, self.history)
        self.flash(f"history loaded from Prometheus: {len(backfill.fleet)} points")

    def _render_header(self) -> None:
        age = None if self._last_ok is None else max(0.0, self._clock() - self._last_ok)
        stale = self._poll_error is not None or (age is not None and age > 2 * self.refresh_s + 2)
        self.fleet.set_stale(age if stale and age is not None else None)
        self.query_one(StatusHeader).show(
            label=self.source.label,
            snapshot=self.frame.status if self.frame else None,
            age_s=age,
            stale=stale,
            paused=self.paused,
            refresh_s=self.refresh_s,
            readonly=self.readonly,
        )

    def flash(self, message: str, *, error: bool = False) -> None:
        """The one-line result of the last action (or poll problem), under the header."""
        style = "bold red" if error else "green"
        glyph = "✗" if error else "✓"
        self.query_one("#flash", Static).update(Text(f" {glyph} {message}", style=style))

    # ---- view keys ----------------------------------------------------------------------------

    def action_help(self) -> None:
        disabled = {a: self._disabled_reason() or "" for a in ROUTER_ACTIONS if self._disabled_reason()}
        self.push_screen(HelpScreen(disabled))

    def action_events(self) -> None:
        """The router's event log (drains, pins, prewarm results, state changes), live."""
        screen = EventsScreen()
        self.push_screen(screen)
        screen.show(self.frame.events if self.frame is not None else ())

    def action_sort_heat(self) -> None:
        self.heat.sort_by_heat()
        self.flash("heat map sorted by requests (rows then keep their places)")

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.fleet.filter_text = event.value.strip()
        if self.frame is not None:
            self.fleet.show(self.frame.status, self.history)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.fleet.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value:
            box.value = ""  # fires Input.Changed, which re-shows every row
        box.display = False
        self.fleet.filter_text = ""
        if self.frame is not None:
            self.fleet.show(self.frame.status, self.history)
        self.fleet.focus()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.poll_now()
        self._render_header()

    def _step_refresh(self, direction: int) -> None:
        steps = REFRESH_STEPS
        index = min(range(len(steps)), key=lambda i: abs(steps[i] - self.refresh_s))
        self.refresh_s = steps[min(max(index + direction, 0), len(steps) - 1)]
        self._render_header()

    def action_slower(self) -> None:
        self._step_refresh(+1)

    def action_faster(self) -> None:
        self._step_refresh(-1)

    def action_sort(self, sort_by: str) -> None:
        self.fleet.set_sort(sort_by)
        direction = "descending" if self.fleet.descending else "ascending"
        self.flash(f"sorted by {SORTS[sort_by][0]}, {direction}")

    @on(RowTable.Selected, "#fleet")
    def _drill_down(self, event: RowTable.Selected) -> None:
        name = event.key
        if name == ALL_ROW:
            return
        screen = ReplicaScreen(name)
        self.push_screen(screen)
        if self.frame is not None:
            screen.show(self.frame, self.history)

    @on(RowTable.Highlighted, "#heat")
    def _prefix_highlighted(self) -> None:
        self.query_one("#detail", PrefixDetail).show(self.heat.selected)

    # ---- actions ------------------------------------------------------------------------------

    def _disabled_reason(self) -> str | None:
        if self.readonly:
            return "--readonly"
        if self.source.client is None:
            return "direct mode (no router)"
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self._modal_open() and action in _MAIN_SCREEN_ACTIONS:
            return False  # a dialog is up: its keys only (q still quits)
        if action in ROUTER_ACTIONS:
            return None if self._disabled_reason() else True
        return True

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Show every key", self.action_help)
        yield SystemCommand("Pause / resume", "Stop or restart polling", self.action_pause)
        yield SystemCommand("Events", "The router's event log", self.action_events)
        if self._disabled_reason() is None:
            yield SystemCommand("Drain replica", "Drain the selected replica", self.action_drain)
            yield SystemCommand("Undrain replica", "Undrain the selected replica", self.action_undrain)
            yield SystemCommand("Pin prefix", "Pin the selected prefix", self.action_pin)
            yield SystemCommand("Unpin prefix", "Unpin the selected prefix", self.action_unpin)
            yield SystemCommand("Prewarm", "Prewarm the prefixes in a file", self.action_prewarm)
        for sort in _SORT_KEYS:
            label = SORTS[sort.sort][0]
            yield SystemCommand(
                f"Sort by {label}", f"Sort the fleet table ({sort.key})", self._sorter(sort.sort)
            )

    def _sorter(self, sort_by: str) -> Callable[[], None]:
        return lambda: self.action_sort(sort_by)

    def _client(self) -> AdminClient:
        client = self.source.client
        assert client is not None  # check_action keeps router actions off without a router
        return client

    def _selected_replica(self) -> str | None:
        if isinstance(self.screen, ReplicaScreen):
            return self.screen.replica_name
        name = self.fleet.selected_name
        if name is None or name == ALL_ROW:
            self.flash("select a replica first (the ALL row cannot be drained)", error=True)
            return None
        return name

    def drain_capacity(self, name: str) -> DrainCapacity | None:
        """Whether the rest of ``name``'s group has room for its work, from the last poll."""
        return drain_capacity(self.frame.status, name) if self.frame is not None else None

    def _selected_prefix(self) -> PrefixRow | None:
        row = self.heat.selected
        if row is None:
            self.flash("select a prefix in the heat map first", error=True)
        return row

    def action_drain(self) -> None:
        if (name := self._selected_replica()) is not None:
            self.run_worker(actions.drain(self, self._client(), name), group="action", exclusive=True)

    def action_undrain(self) -> None:
        if (name := self._selected_replica()) is not None:
            current = self.fleet.replicas.get(name)
            flow = actions.undrain(self, self._client(), name, current.state if current else None)
            self.run_worker(flow, group="action", exclusive=True)

    def action_pin(self) -> None:
        if (row := self._selected_prefix()) is not None:
            selected = self.fleet.selected_name
            default = row.owners or ([selected] if selected and selected != ALL_ROW else [])
            self.run_worker(actions.pin(self, self._client(), row, default), group="action", exclusive=True)

    def action_unpin(self) -> None:
        if (row := self._selected_prefix()) is not None:
            self.run_worker(actions.unpin(self, self._client(), row), group="action", exclusive=True)

    def action_prewarm(self) -> None:
        flow = actions.prewarm(self, self._client(), self.heat.selected)
        self.run_worker(flow, group="action", exclusive=True)

    async def on_unmount(self) -> None:
        await self.source.aclose()
