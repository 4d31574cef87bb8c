"""The drill-down of one replica (Enter on a fleet row): engine stats, trends, and its prefixes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static

from pcache.api import ReplicaStatus
from pcache_console.cells import kv_bar, number, percent, rate, seconds, spark, state_label, tier_bar
from pcache_console.history import History
from pcache_console.source import Frame
from pcache_console.widgets.heatmap import prefix_label

__all__ = ["ReplicaScreen"]


def _stats(replica: ReplicaStatus) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("state", state_label(replica)),
        ("url", replica.url),
        ("engine", f"{replica.engine}  group {replica.group or '-'}  weight {replica.weight:g}"),
        ("KV usage", kv_bar(replica.kv_usage, width=20)),
        ("running / waiting", f"{number(replica.running)} / {number(replica.waiting)}"),
        ("in flight (router)", str(replica.in_flight)),
        ("prefix-cache hit rate", percent(replica.hit_rate)),
        ("hit rate by tier", tier_bar(replica.hit_rate_by_tier)),
        ("TTFT p50 / p95", f"{seconds(replica.ttft_p50)} / {seconds(replica.ttft_p95)}"),
        ("requests/s  total", f"{rate(replica.requests_per_s)}  {replica.requests_total}"),
        ("sessions homed", str(replica.sessions)),
        ("Tier-1 owned", ", ".join(replica.tier1_owned) or "-"),
        ("Tier-1 pinned", ", ".join(replica.tier1_pinned) or "-"),
        ("last scrape", "-" if replica.scrape_age_s is None else f"{replica.scrape_age_s:.1f}s ago"),
    ]
    if replica.last_error:
        when = ""
        if replica.last_error_at is not None:
            when = datetime.fromtimestamp(replica.last_error_at, UTC).strftime("%H:%M:%S UTC  ")
        rows.append(("last error", Text(when + replica.last_error, style="red")))
    for label, value in rows:
        table.add_row(label, value)
    return table


class ReplicaScreen(Screen[None]):
    """Live while open: the app hands it every new frame."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.replica_name = name
        self._latest: tuple[Frame, History] | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f" replica {self.replica_name} ", style="bold reverse"), id="replica-title")
        with Horizontal(id="replica-body"):
            yield Static(id="replica-stats")
            yield Static(id="replica-trends")
        yield Static(id="replica-prefixes")
        yield Footer()

    def show(self, frame: Frame, history: History) -> None:
        """Keep the newest frame; draw it now if mounted, else once mounted."""
        self._latest = (frame, history)
        if self.is_mounted:
            self._draw(frame, history)

    def on_mount(self) -> None:
        if self._latest is not None:
            self._draw(*self._latest)

    def _draw(self, frame: Frame, history: History) -> None:
        replica = next((r for r in frame.status.replicas if r.name == self.replica_name), None)
        stats = self.query_one("#replica-stats", Static)
        if replica is None:
            stats.update(Text(f"{self.replica_name} is no longer in the fleet", style="bold red"))
            return
        stats.update(_stats(replica))
        trends = self.query_one("#replica-trends", Static)
        width = max(trends.content_size.width, 20)
        text = Text()
        for label, trail in (
            ("KV usage", history.kv_usage.get(replica.name, ())),
            ("prefix-cache hit rate", history.hit_rate.get(replica.name, ())),
        ):
            # Scaled 0..100%, like the table's trend columns (a sparkline scaled to its own range
            # makes a flat 13% look full).
            text.append(f"{label} (0-100%, last {min(len(trail), width)} polls)\n", style="bold")
            text.append(spark(list(trail), width=width) + "\n\n", style="cyan")
        trends.update(text)
        prefixes = Table(title="prefixes served here (window)", title_justify="left", box=None)
        for column in ("prefix", "kind", "requests", "share", "tokens", "mark"):
            prefixes.add_column(column)
        rows = frame.heat.prefixes if frame.heat is not None else []
        served = [(row, row.by_replica.get(replica.name)) for row in rows]
        for row, cell in sorted(served, key=lambda item: -(item[1].requests if item[1] else 0)):
            if cell is None or not (cell.requests or cell.owner or cell.pinned):
                continue
            mark = "pinned" if cell.pinned else ("owner" if cell.owner else "")
            prefixes.add_row(
                prefix_label(row), row.kind, str(cell.requests), percent(cell.share), str(cell.tokens), mark
            )
        self.query_one("#replica-prefixes", Static).update(prefixes)

    def action_back(self) -> None:
        self.dismiss(None)
