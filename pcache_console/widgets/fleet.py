"""The fleet table: one row per replica plus the ALL row, updated in place by row key.

Rows are never cleared and rebuilt (that would lose the cursor): each refresh updates the cells
that exist, adds rows for new replicas, removes rows the filter hides or the router dropped, then
re-sorts and puts the cursor back on the replica it was on.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import DataTable

from pcache.api import ReplicaStatus, StatusSnapshot
from pcache_console.cells import kv_bar, number, percent, rate, seconds, spark, state_label
from pcache_console.history import History

__all__ = ["ALL_ROW", "SORTS", "FleetTable"]

ALL_ROW = "ALL"

COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "replica"),
    ("state", "state"),
    ("kv", "KV usage"),
    ("kv_trend", "KV trend"),
    ("load", "run/wait"),
    ("in_flight", "in-flight"),
    ("hit", "hit"),
    ("hit_trend", "hit trend"),
    ("ttft", "TTFT p95"),
    ("sessions", "sessions"),
    ("tier1", "tier-1"),
    ("rps", "req/s"),
)

_STATE_ORDER = {"unhealthy": 0, "draining": 1, "drained": 2, "removed": 3, "healthy": 4}

SORTS: dict[str, tuple[str, Callable[[ReplicaStatus], object], bool]] = {
    # sort name -> (label, key, descending by default)
    "name": ("name", lambda r: r.name, False),
    "state": ("state", lambda r: (_STATE_ORDER[r.state] - (0.5 if r.stale else 0), r.name), False),
    "kv": ("KV usage", lambda r: r.kv_usage if r.kv_usage is not None else -1.0, True),
    "hit": ("hit rate", lambda r: r.hit_rate if r.hit_rate is not None else -1.0, True),
    "ttft": ("TTFT p95", lambda r: r.ttft_p95 if r.ttft_p95 is not None else -1.0, True),
    "waiting": ("waiting", lambda r: (r.waiting or 0, r.in_flight), True),
    "sessions": ("sessions", lambda r: r.sessions, True),
    "rps": ("req/s", lambda r: r.requests_per_s, True),
}
_UNCHANGED_HIGHLIGHT = frozenset({"name", "kv_trend", "hit_trend"})


def _tier1(replica: ReplicaStatus) -> str:
    owned, pinned = len(replica.tier1_owned), len(replica.tier1_pinned)
    if not owned and not pinned:
        return "-"
    return f"{owned} own" + (f" {pinned} pin" if pinned else "")


def _cells(replica: ReplicaStatus, history: History, up: str) -> dict[str, str | Text]:
    return {
        "name": replica.name,
        "state": Text(up, style="bold") if replica.name == ALL_ROW else state_label(replica),
        "kv": kv_bar(replica.kv_usage),
        "kv_trend": spark(history.kv_usage.get(replica.name, ())),
        "load": f"{number(replica.running)}/{number(replica.waiting)}",
        "in_flight": str(replica.in_flight),
        "hit": percent(replica.hit_rate),
        "hit_trend": spark(history.hit_rate.get(replica.name, ())),
        "ttft": seconds(replica.ttft_p95),
        "sessions": str(replica.sessions),
        "tier1": _tier1(replica),
        "rps": rate(replica.requests_per_s),
    }


class FleetTable(DataTable[str | Text]):
    """Replicas (filtered, sorted) and the ALL row, last."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.sort_by = "name"
        self.descending = False
        self.filter_text = ""
        self.replicas: dict[str, ReplicaStatus] = {}
        self._shown: dict[tuple[str, str], str] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_name(self) -> str | None:
        """The replica under the cursor (``ALL`` for the ALL row), or ``None`` when empty."""
        if not self.row_count:
            return None
        row = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return str(row) if row is not None else None

    def set_sort(self, sort_by: str) -> None:
        """Sort by ``sort_by``; asking for the current sort again flips its direction."""
        if sort_by == self.sort_by:
            self.descending = not self.descending
        else:
            self.sort_by, self.descending = sort_by, SORTS[sort_by][2]
        self._resort()

    def _matches(self, replica: ReplicaStatus) -> bool:
        needle = self.filter_text.lower()
        if not needle:
            return True
        haystack = f"{replica.name} {replica.state} {replica.url} {replica.group or ''}"
        if replica.stale:
            haystack += " stale"
        if replica.state == "unhealthy":
            haystack += " down"
        return needle in haystack.lower()

    def show(self, snapshot: StatusSnapshot, history: History) -> None:
        """Bring the rows in line with ``snapshot`` without rebuilding the table."""
        self.replicas = {r.name: r for r in snapshot.replicas}
        wanted = {r.name: r for r in snapshot.replicas if self._matches(r)}
        wanted[ALL_ROW] = snapshot.all.model_copy(update={"name": ALL_ROW})
        for key in [k.value for k in self.rows if k.value not in wanted]:
            if key is not None:
                self.remove_row(key)
                self._shown = {cell: v for cell, v in self._shown.items() if cell[0] != key}
        routable = sum(1 for r in snapshot.replicas if r.state == "healthy" and not r.stale)
        up = f"{routable}/{len(snapshot.replicas)} up"
        for name, replica in wanted.items():
            cells = _cells(replica, history, up)
            if name in self.rows:
                for column, value in cells.items():
                    self._update(name, column, value)
            else:
                self.add_row(*cells.values(), key=name)
                self._shown.update(
                    {(name, c): v.plain if isinstance(v, Text) else v for c, v in cells.items()}
                )
        self._resort()

    def _update(self, row: str, column: str, value: str | Text) -> None:
        plain = value.plain if isinstance(value, Text) else value
        previous = self._shown.get((row, column))
        if previous == plain and column not in _UNCHANGED_HIGHLIGHT:
            return
        if previous is not None and column not in _UNCHANGED_HIGHLIGHT:
            # k9s-style: a value that just changed is shown bold for one refresh.
            value = Text(value) if isinstance(value, str) else value.copy()
            value.stylize("bold")
        self._shown[(row, column)] = plain
        self.update_cell(row, column, value)

    def _resort(self) -> None:
        selected = self.selected_name
        _, key, _ = SORTS[self.sort_by]
        names = sorted(
            (n for n in (k.value for k in self.rows) if n is not None and n != ALL_ROW),
            key=lambda n: (key(self.replicas[n]), n),
            reverse=self.descending,
        )
        rank = {name: i for i, name in enumerate(names)}
        self.sort("name", key=lambda name: rank.get(name, len(rank)))
        if selected is not None and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)
