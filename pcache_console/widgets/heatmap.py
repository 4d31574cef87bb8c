"""The prefix heat map: top prefixes x replicas, each cell shaded by that replica's share of the
prefix's traffic in the window, marked ``o`` (owner) or ``P`` (pinned); and the detail of one row."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable, Static

from pcache.api import PrefixHeat, PrefixRow
from pcache_console.cells import heat_cell, percent

__all__ = ["HeatMap", "PrefixDetail", "prefix_label"]

_KIND = {"registered": "reg", "pinned": "pin", "hot": "hot"}


class _KeyedText(Text):
    """A cell that knows its row key, so the table can be re-ordered by the router's ranking."""

    def __init__(self, text: str, row_key: str) -> None:
        super().__init__(text)
        self.row_key = row_key


def prefix_label(row: PrefixRow) -> str:
    """A prefix's name, or the head of its key for an unnamed (auto-detected) prefix."""
    return row.name or f"#{row.key[:10]}"


class HeatMap(DataTable[str | Text]):
    """One row per prefix (keyed by prefix key), one column per replica; updated in place."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)  # type: ignore[arg-type]
        self.prefixes: dict[str, PrefixRow] = {}
        self._replicas: list[str] = []

    def on_mount(self) -> None:
        self.add_column("prefix", key="prefix", width=16)
        self.add_column("kind", key="kind")
        self.add_column("req", key="requests")

    @property
    def selected(self) -> PrefixRow | None:
        """The prefix under the cursor, if any."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.prefixes.get(key or "")

    def show(self, heat: PrefixHeat) -> None:
        selected = self.selected
        self._sync_columns(heat.replicas)
        self.prefixes = {row.key: row for row in heat.prefixes}
        for key in [k.value for k in self.rows if k.value not in self.prefixes]:
            if key is not None:
                self.remove_row(key)
        for row in heat.prefixes:
            cells: dict[str, str | Text] = {
                "prefix": _KeyedText(prefix_label(row)[:16], row.key),
                "kind": _KIND[row.kind],
                "requests": str(row.requests),
            }
            for replica in self._replicas:
                cell = row.by_replica.get(replica)
                cells[f"r:{replica}"] = (
                    heat_cell(cell.share, owner=cell.owner or replica in row.owners, pinned=cell.pinned)
                    if cell is not None
                    else heat_cell(0.0, owner=replica in row.owners, pinned=False)
                )
            if row.key in self.rows:
                for column, value in cells.items():
                    self.update_cell(row.key, column, value)
            else:
                self.add_row(*cells.values(), key=row.key)
        # The router sends rows hottest first; keep its order without rebuilding the table.
        rank = {row.key: i for i, row in enumerate(heat.prefixes)}
        self.sort("prefix", key=lambda cell: rank.get(getattr(cell, "row_key", ""), len(rank)))
        if selected is not None and selected.key in self.rows:
            self.move_cursor(row=self.get_row_index(selected.key), animate=False)

    def _sync_columns(self, replicas: list[str]) -> None:
        if replicas == self._replicas:
            return
        for name in self._replicas:
            if name not in replicas:
                self.remove_column(f"r:{name}")
        for name in replicas:
            if name not in self._replicas:
                self.add_column(name[:3].rjust(3), key=f"r:{name}")
        self._replicas = [n for n in replicas]


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
