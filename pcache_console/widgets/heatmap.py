"""The prefix heat map: top prefixes x replicas, each cell shaded by that replica's share of the
prefix's traffic in the window, marked ``o`` (owner) or ``P`` (pinned); and the detail of one row.

Each row's replica cells are one Text (three characters per replica under a header of replica
names), so a 200 x 64 map is 200 table cells to diff, update and paint, not 12,800.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from pcache.api import PrefixHeat, PrefixRow
from pcache_console.cells import heat_level, heat_strip, percent
from pcache_console.widgets.live_table import LiveTable

__all__ = ["HeatMap", "PrefixDetail", "prefix_label"]

_KIND = {"registered": "reg", "pinned": "pin", "hot": "hot"}
_Signature = tuple[str, int, tuple[tuple[int, str], ...]]


class _KeyedText(Text):
    """A cell that knows its row key, so the table can be re-ordered by the router's ranking."""

    def __init__(self, text: str, row_key: str) -> None:
        super().__init__(text)
        self.row_key = row_key


def prefix_label(row: PrefixRow) -> str:
    """A prefix's name, or the head of its key for an unnamed (auto-detected) prefix."""
    return row.name or f"#{row.key[:10]}"


def _marks(row: PrefixRow, replicas: list[str]) -> tuple[tuple[int, str], ...]:
    owners = set(row.owners)
    cells = row.by_replica
    marks = []
    for replica in replicas:
        cell = cells.get(replica)
        if cell is None:
            marks.append((0, "o" if replica in owners else " "))
        else:
            mark = "P" if cell.pinned else ("o" if cell.owner or replica in owners else " ")
            marks.append((heat_level(cell.share), mark))
    return tuple(marks)


class HeatMap(LiveTable[str | Text]):
    """One row per prefix (keyed by prefix key), updated in place; rows in the router's order."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)  # type: ignore[arg-type]
        self.prefixes: dict[str, PrefixRow] = {}
        self._replicas: list[str] = []
        self._shown: dict[str, _Signature] = {}

    def on_mount(self) -> None:
        self.add_column("prefix", key="prefix", width=16)
        self.add_column("kind", key="kind")
        self.add_column("req", key="requests", width=6)
        self.add_column("replicas", key="cells")

    @property
    def selected(self) -> PrefixRow | None:
        """The prefix under the cursor, if any."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.prefixes.get(key or "")

    def show(self, heat: PrefixHeat, fleet: list[str] | None = None) -> None:
        """Show ``heat``; columns are the fleet's replicas (``fleet``) plus any the map names."""
        selected = self.selected
        replicas = list(fleet or [])
        replicas += [name for name in heat.replicas if name not in replicas]
        if replicas != self._replicas:
            self._replicas = replicas
            self.remove_column("cells")
            self.add_column(Text("".join(f"{name[:3]:<3}" for name in self._replicas)), key="cells")
            self._shown.clear()  # every row's cells must line up under the new header
        self.prefixes = {row.key: row for row in heat.prefixes}
        for key in [k.value for k in self.rows if k.value not in self.prefixes]:
            if key is not None:
                self.remove_row(key)
                self._shown.pop(key, None)
        for row in heat.prefixes:
            signature: _Signature = (row.kind, row.requests, _marks(row, self._replicas))
            if self._shown.get(row.key) == signature:
                continue
            cells: dict[str, str | Text] = {
                "prefix": _KeyedText(prefix_label(row)[:16], row.key),
                "kind": _KIND[row.kind],
                "requests": str(row.requests),
                "cells": heat_strip(signature[2]),
            }
            previous = self._shown.get(row.key)
            if row.key in self.rows:
                changed = {
                    "prefix": previous is None,
                    "kind": previous is None or previous[0] != signature[0],
                    "requests": previous is None or previous[1] != signature[1],
                    "cells": previous is None or previous[2] != signature[2],
                }
                if previous is None:  # new replica columns: widths may change
                    for column, value in cells.items():
                        self.update_cell(row.key, column, value, update_width=True)
                else:
                    self.set_cells(row.key, {c: v for c, v in cells.items() if changed[c]})
            else:
                self.add_row(*cells.values(), key=row.key)
            self._shown[row.key] = signature
        self.flush_cells()
        # The router sends rows hottest first; keep its order (sorting only when it changed).
        order = [row.key for row in heat.prefixes]
        if [row.key.value for row in self.ordered_rows] != order:
            rank = {key: i for i, key in enumerate(order)}
            self.sort("prefix", key=lambda cell: rank.get(getattr(cell, "row_key", ""), len(rank)))
        if selected is not None and selected.key in self.rows:
            index = self.get_row_index(selected.key)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)


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
        text.append(f"hit {percent(row.hit_rate)}  owners {', '.join(row.owners) or '-'}")
        served = sorted(
            ((name, cell.share) for name, cell in row.by_replica.items() if cell.share > 0),
            key=lambda item: -item[1],
        )[:6]
        if served:
            text.append("\nserved by " + ", ".join(f"{n} {percent(s, 0)}" for n, s in served))
        self.update(text)
