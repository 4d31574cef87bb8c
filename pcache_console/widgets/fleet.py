"""The fleet table: one row per replica plus the ALL row, updated in place by row key.

Rows are never cleared and rebuilt (that would lose the cursor): each refresh updates the cells
that exist, adds rows for new replicas, removes rows the filter hides or the router dropped, then
re-sorts and puts the cursor back on the replica it was on.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Span, Text

from pcache.api import ReplicaStatus, StatusSnapshot
from pcache_console.cells import error_rate, kv_bar, number, percent, rate, seconds, spark, state_label
from pcache_console.history import History
from pcache_console.widgets.rows import RowTable

__all__ = ["ALL_ROW", "FIELDS", "PRIORITY", "SORTS", "FleetTable", "columns_for"]

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
    ("errors", "errors", 6, True),
    ("sessions", "sessions", 8, True),
    ("tier1", "tier-1", 11, False),
    ("rps", "req/s", 6, True),
)
# Which fields a narrow terminal keeps, most important first: at 80 columns state, KV, hit,
# TTFT and errors still fit; the trends (which only repeat the numbers) go first.
PRIORITY = (
    "state",
    "kv",
    "hit",
    "ttft",
    "errors",
    "load",
    "rps",
    "sessions",
    "tier1",
    "in_flight",
    "hit_trend",
    "kv_trend",
)
_GAP = "  "

_STATE_ORDER = {"unhealthy": 0, "joining": 1, "draining": 2, "drained": 3, "removed": 4, "healthy": 5}

SORTS: dict[str, tuple[str, Callable[[ReplicaStatus], object], bool]] = {
    # sort name -> (label, key, descending by default)
    "name": ("name", lambda r: r.name, False),
    "state": ("state", lambda r: (_STATE_ORDER[r.state] - (0.5 if r.stale else 0), r.name), False),
    "kv": ("KV usage", lambda r: r.kv_usage if r.kv_usage is not None else -1.0, True),
    "hit": ("hit rate", lambda r: r.hit_rate if r.hit_rate is not None else -1.0, True),
    "ttft": ("TTFT p95", lambda r: r.ttft_p95 if r.ttft_p95 is not None else -1.0, True),
    "errors": ("error rate", lambda r: r.error_rate if r.error_rate is not None else -1.0, True),
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


_SHORT_STATES = {"DRAINING": "DRAIN", "DRAINED": "DRND", "JOINING": "JOIN", "REMOVED": "GONE"}


def age(seconds: float) -> str:
    """A compact age: ``34s``, ``5m``, ``2h``."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3600 else f"{seconds / 3600:.0f}h"


def _state(replica: ReplicaStatus, up: str, stale_age: float | None) -> Text:
    """The state word; while the router is unreachable, the word it last had and how old it is."""
    label = Text(up, style="bold") if replica.name == ALL_ROW else state_label(replica)
    if stale_age is None:
        return label
    word = "old" if replica.name == ALL_ROW else _SHORT_STATES.get(label.plain, label.plain)
    return Text(f"{word} {age(stale_age)}")


def _fields(
    replica: ReplicaStatus, history: History, up: str, stale_age: float | None = None
) -> dict[str, str | Text]:
    return {
        "state": _state(replica, up, stale_age),
        "kv": kv_bar(replica.kv_usage),
        "kv_trend": spark(history.kv_usage.get(replica.name, ())),
        "load": f"{number(replica.running)}/{number(replica.waiting)}",
        "in_flight": str(replica.in_flight),
        "hit": percent(replica.hit_rate),
        "hit_trend": spark(history.hit_rate.get(replica.name, ())),
        "ttft": seconds(replica.ttft_p95),
        "errors": error_rate(replica.error_rate),
        "sessions": str(replica.sessions),
        "tier1": _tier1(replica),
        "rps": rate(replica.requests_per_s),
    }


Field = tuple[str, str, int, bool]


def columns_for(width: int) -> tuple[Field, ...]:
    """The fields that fit in ``width`` cells after the name, in table order, kept by priority."""
    room = width - NAME_WIDTH - len(_GAP)
    by_key = {field[0]: field for field in FIELDS}
    chosen: set[str] = set()
    for key in PRIORITY:
        cost = by_key[key][2] + len(_GAP)
        if cost > room:
            break  # strict priority: never a minor column in place of a major one
        chosen.add(key)
        room -= cost
    return tuple(field for field in FIELDS if field[0] in chosen)


def header_for(columns: tuple[Field, ...]) -> Text:
    return Text(
        "replica".ljust(NAME_WIDTH)
        + _GAP
        + "".join((h.rjust(w) if right else h.ljust(w)) + _GAP for _, h, w, right in columns)
    )


def _layout(fields: dict[str, str | Text], bold: frozenset[str], columns: tuple[Field, ...]) -> Text:
    """One row's fields in fixed-width columns; fields that just changed are bold (k9s-style).

    Built as one string plus spans (every glyph used is one cell wide): this runs for every
    replica on every poll."""
    parts: list[str] = []
    spans: list[Span] = []
    position = 0
    for key, _, width, right in columns:
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


NAME_WIDTH = 10


class FleetTable(RowTable):
    """Replicas (filtered, sorted) and the ALL row, last; one row per replica, kept by name."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(fixed_width=NAME_WIDTH + len(_GAP), id=id)
        self.sort_by = "name"
        self.descending = False
        self.filter_text = ""
        self.replicas: dict[str, ReplicaStatus] = {}
        self._shown: dict[str, _Signature] = {}
        self.columns: tuple[Field, ...] = FIELDS
        self._last: tuple[StatusSnapshot, History] | None = None
        self.stale_age: float | None = None  # seconds since the router last answered, when it stopped
        self.set_header(header_for(self.columns))

    def on_resize(self) -> None:
        """Keep the most important columns when the terminal is narrow (see ``PRIORITY``)."""
        columns = columns_for(self.scrollable_content_region.width - 1)  # room for the scrollbar
        if columns == self.columns:
            return
        self.columns = columns
        self.set_width(0)  # the rows set next measure the new width
        self.set_header(header_for(columns))
        self._shown.clear()
        if self._last is not None:
            self.show(*self._last)

    @property
    def selected_name(self) -> str | None:
        """The replica under the cursor (``ALL`` for the ALL row), or ``None`` when empty."""
        return self.selected_key

    def set_sort(self, sort_by: str) -> None:
        """Sort by ``sort_by``; asking for the current sort again flips its direction."""
        if sort_by == self.sort_by:
            self.descending = not self.descending
        else:
            self.sort_by, self.descending = sort_by, SORTS[sort_by][2]
        self._resort()
        self.commit()

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

    def set_stale(self, stale_age: float | None) -> None:
        """Dim every row and show its age while the data is stale (``None``: fresh again)."""
        shown = None if stale_age is None else age(stale_age)
        if shown == (None if self.stale_age is None else age(self.stale_age)):
            self.stale_age = stale_age
            return
        self.stale_age = stale_age
        if self._last is not None:
            self.show(*self._last)

    def show(self, snapshot: StatusSnapshot, history: History) -> None:
        """Bring the rows in line with ``snapshot``: update in place, add, remove, re-sort."""
        self._last = (snapshot, history)
        self.replicas = {r.name: r for r in snapshot.replicas}
        wanted = {r.name: r for r in snapshot.replicas if self._matches(r)}
        wanted[ALL_ROW] = snapshot.all.model_copy(update={"name": ALL_ROW})
        for key in [k for k in self.keys if k not in wanted]:
            self.remove_row(key)
            self._shown.pop(key, None)
        routable = sum(1 for r in snapshot.replicas if r.state == "healthy" and not r.stale)
        up = f"{routable}/{len(snapshot.replicas)} up"
        for name, replica in wanted.items():
            fields = _fields(replica, history, up, self.stale_age)
            plains = tuple(v.plain if isinstance(v, Text) else v for v in fields.values())
            previous = self._shown.get(name)
            before = previous[0] if previous else plains
            changed = frozenset(
                key
                for (key, *_), plain, old in zip(FIELDS, plains, before, strict=True)
                if plain != old and key not in _NO_HIGHLIGHT
            )
            signature = (plains, changed)
            if previous == signature:
                continue
            self._shown[name] = signature
            label = Text(
                _cut(name, NAME_WIDTH).ljust(NAME_WIDTH) + _GAP, style="bold" if name == ALL_ROW else ""
            )
            row = Text.assemble(label, _layout(fields, changed, self.columns))
            if self.stale_age is not None:
                row.stylize("dim")  # last known values, not live ones
            self.set_row(name, row)
        self._resort()
        self.commit()

    def _resort(self) -> None:
        _, key, _ = SORTS[self.sort_by]
        names = sorted(
            (n for n in self.keys if n != ALL_ROW),
            key=lambda n: (key(self.replicas[n]), n),
            reverse=self.descending,
        )
        self.set_order([*names, ALL_ROW])


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
