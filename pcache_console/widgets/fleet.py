"""The fleet table: one row per replica plus the ALL row, updated in place by row key.

Rows are never cleared and rebuilt (that would lose the cursor): each refresh updates the cells
that exist, adds rows for new replicas, removes rows the filter hides or the router dropped, then
re-sorts and puts the cursor back on the replica it was on.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Span, Text

from pcache.api import ReplicaStatus, StatusSnapshot
from pcache_console.cells import kv_bar, number, percent, rate, seconds, spark, state_label
from pcache_console.history import History
from pcache_console.widgets.live_table import LiveTable

__all__ = ["ALL_ROW", "SORTS", "FleetTable"]

ALL_ROW = "ALL"

# (key, header, width, right-aligned): the row's fields after the name, laid out in one cell.
FIELDS: tuple[tuple[str, str, int, bool], ...] = (
    ("state", "state", 8, False),
    ("kv", "KV usage", 20, False),
    ("kv_trend", "KV trend", 12, False),
    ("load", "run/wait", 8, True),
    ("in_flight", "in-flight", 9, True),
    ("hit", "hit", 6, True),
    ("hit_trend", "hit trend", 12, False),
    ("ttft", "TTFT p95", 8, True),
    ("sessions", "sessions", 8, True),
    ("tier1", "tier-1", 11, False),
    ("rps", "req/s", 6, True),
)
_GAP = "  "

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
_NO_HIGHLIGHT = frozenset({"kv_trend", "hit_trend"})
_Signature = tuple[tuple[str, ...], frozenset[str]]


def _tier1(replica: ReplicaStatus) -> str:
    owned, pinned = len(replica.tier1_owned), len(replica.tier1_pinned)
    if not owned and not pinned:
        return "-"
    return f"{owned} own" + (f" {pinned} pin" if pinned else "")


def _fields(replica: ReplicaStatus, history: History, up: str) -> dict[str, str | Text]:
    return {
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


def _layout(fields: dict[str, str | Text], bold: frozenset[str]) -> Text:
    """One row's fields in fixed-width columns; fields that just changed are bold (k9s-style).

    Built as one string plus spans (every glyph used is one cell wide): this runs for every
    replica on every poll."""
    parts: list[str] = []
    spans: list[Span] = []
    position = 0
    for key, _, width, right in FIELDS:
        value = fields[key]
        plain = (value if isinstance(value, str) else value.plain)[:width]
        pad = " " * (width - len(plain))
        start = position + (len(pad) if right else 0)
        end = start + len(plain)
        if isinstance(value, Text):
            if value.style:
                spans.append(Span(start, end, value.style))
            spans.extend(Span(start + s.start, min(start + s.end, end), s.style) for s in value.spans)
        if key in bold:
            spans.append(Span(start, end, "bold"))
        parts.append(f"{pad}{plain}{_GAP}" if right else f"{plain}{pad}{_GAP}")
        position += width + len(_GAP)
    return Text("".join(parts), spans=spans)


HEADER = Text(
    "".join((h.rjust(w) if right else h.ljust(w)) + _GAP for _, h, w, right in FIELDS), style="bold"
)


class FleetTable(LiveTable[str | Text]):
    """Replicas (filtered, sorted) and the ALL row, last.

    Each row is two cells, the name and the rest laid out in fixed columns: DataTable re-renders
    every visible cell after any update, so fewer, wider cells keep a 64-replica refresh cheap.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.sort_by = "name"
        self.descending = False
        self.filter_text = ""
        self.replicas: dict[str, ReplicaStatus] = {}
        self._shown: dict[str, _Signature] = {}

    def on_mount(self) -> None:
        self.add_column("replica", key="name")
        self.add_column(HEADER, key="row")

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
                self._shown.pop(key, None)
        routable = sum(1 for r in snapshot.replicas if r.state == "healthy" and not r.stale)
        up = f"{routable}/{len(snapshot.replicas)} up"
        for name, replica in wanted.items():
            fields = _fields(replica, history, up)
            plains = tuple(v.plain if isinstance(v, Text) else v for v in fields.values())
            previous = self._shown.get(name)
            changed = frozenset(
                key
                for (key, *_), plain, before in zip(
                    FIELDS, plains, previous[0] if previous else plains, strict=True
                )
                if plain != before and key not in _NO_HIGHLIGHT
            )
            signature = (plains, changed)
            if previous == signature:
                continue
            self._shown[name] = signature
            row = _layout(fields, changed)
            if previous is None:
                self.add_row(name, row, key=name)
            else:
                self.set_cells(name, {"row": row})
        self.flush_cells()
        self._resort()

    def _resort(self) -> None:
        selected = self.selected_name
        _, key, _ = SORTS[self.sort_by]
        names = sorted(
            (n for n in (k.value for k in self.rows) if n is not None and n != ALL_ROW),
            key=lambda n: (key(self.replicas[n]), n),
            reverse=self.descending,
        )
        if [row.key.value for row in self.ordered_rows] == [*names, ALL_ROW]:
            return  # already in order: sorting would only invalidate the render cache
        rank = {name: i for i, name in enumerate(names)}
        self.sort("name", key=lambda name: rank.get(name, len(rank)))
        if selected is not None and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)
