"""The prefix heat map: top prefixes x replicas, each cell the replica's share of the prefix's
traffic in the window (a two-digit percent, shaded by level), marked ``o`` (owner) or ``P``
(pinned); and the detail of one row.

Rows keep their place across refreshes (new prefixes join at the bottom, gone ones leave), so the
row under the cursor does not move while the operator reads or acts on it; ``o`` re-sorts by heat.

A row is one line of text (three characters per replica under a header of replica names), built
only when it is painted: of a 200 x 64 map, a refresh pays for the rows on screen.
"""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.widgets import Static

from pcache.api import PrefixHeat, PrefixRow
from pcache_console.cells import heat_level, heat_strip, percent
from pcache_console.widgets.rows import RowTable

__all__ = ["HeatMap", "PrefixDetail", "prefix_label"]

_KIND = {"registered": "reg", "pinned": "pin", "hot": "hot"}


def prefix_label(row: PrefixRow) -> str:
    """A prefix's name, or the head of its key for an unnamed (auto-detected) prefix."""
    return row.name or f"#{row.key[:10]}"


def _marks(row: PrefixRow, replicas: list[str]) -> tuple[tuple[int, str, float], ...]:
    owners = set(row.owners)
    cells = row.by_replica
    marks = []
    for replica in replicas:
        cell = cells.get(replica)
        if cell is None:
            marks.append((0, "o" if replica in owners else " ", 0.0))
        else:
            mark = "P" if cell.pinned else ("o" if cell.owner or replica in owners else " ")
            marks.append((heat_level(cell.share), mark, cell.share))
    return tuple(marks)


LABEL_WIDTH = 16
CELLS_AT = LABEL_WIDTH + 2 + 4 + 2 + 6 + 2  # where the replica cells start in a row


def _head(label: str, kind: str, requests: str) -> str:
    label = label if len(label) <= LABEL_WIDTH else label[: LABEL_WIDTH - 1] + "…"
    return f"{label:<{LABEL_WIDTH}}  {kind:<4}  {requests:>6}  "


def _row_text(row: PrefixRow, replicas: list[str]) -> Text:
    head = _head(prefix_label(row), _KIND[row.kind], str(row.requests))
    return Text.assemble(head, heat_strip(_marks(row, replicas)))


class HeatMap(RowTable):
    """One row per prefix (keyed by prefix key), updated in place; rows in the router's order."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(fixed_width=CELLS_AT, id=id)
        self.prefixes: dict[str, PrefixRow] = {}
        self._replicas: list[str] = []
        self._order: list[str] = []
        self.set_header(Text(_head("prefix", "kind", "req")))

    @property
    def selected(self) -> PrefixRow | None:
        """The prefix under the cursor, if any."""
        key = self.selected_key
        return self.prefixes.get(key) if key is not None else None

    def cells_of(self, key: str) -> str:
        """The replica cells of a row as shown (three characters per replica)."""
        return self.row_text(key).plain[CELLS_AT:]

    def show(self, heat: PrefixHeat, fleet: list[str] | None = None) -> None:
        """Show ``heat``; columns are the fleet's replicas (``fleet``) plus any the map names."""
        replicas = list(fleet or [])
        replicas += [name for name in heat.replicas if name not in replicas]
        columns_changed = replicas != self._replicas
        if columns_changed:
            self._replicas = replicas
            # Three cells per replica: the end of a name tells "node-07" from "node-08".
            names = "".join(f"{name[-3:]:<3}" for name in replicas)
            self.set_header(Text(_head("prefix", "kind", "req") + names))
        shown, self.prefixes = self.prefixes, {row.key: row for row in heat.prefixes}
        for key in [k for k in self.keys if k not in self.prefixes]:
            self.remove_row(key)
        for row in heat.prefixes:
            if not columns_changed and shown.get(row.key) == row:
                continue  # unchanged: keep its built row and painted strip
            # Built when painted: of 200 prefixes x 64 replicas only the visible rows cost anything.
            self.set_row(row.key, partial(_row_text, row, self._replicas))
        self.set_width(CELLS_AT + 3 * len(self._replicas))
        self._order = [row.key for row in heat.prefixes]  # the router's: hottest first
        if not shown:
            self.set_order(self._order)  # the first fill; after it, rows keep their places
        self.commit()

    def sort_by_heat(self) -> None:
        """Put the rows in the router's order (hottest first); the cursor stays on its prefix."""
        self.set_order(self._order)
        self.commit()


class PrefixDetail(Static):
    """Name, first characters, tokens, sessions, hit rate and owners of the selected prefix."""

    def show(self, row: PrefixRow | None) -> None:
        if row is None:
            self.update(Text("no prefix selected", style="dim"))
            return
        text = Text()
        text.append(prefix_label(row), style="bold")
        text.append(f"  ({row.kind}, key {row.key[:16]})\n", style="dim")
        if row.text_head:
            head = row.text_head.replace("\n", "⏎ ")
            text.append(f"“{head[:100]}”\n")
        text.append(f"{row.tokens} tokens  {row.sessions} sessions  {row.requests} requests  ")
        text.append(f"predicted hit {percent(row.hit_rate)}  owners {', '.join(row.owners) or '-'}")
        served = sorted(
            ((name, cell.share) for name, cell in row.by_replica.items() if cell.share > 0),
            key=lambda item: -item[1],
        )[:6]
        if served:
            text.append("\nserved by " + ", ".join(f"{n} {percent(s, 0)}" for n, s in served))
        self.update(text)
