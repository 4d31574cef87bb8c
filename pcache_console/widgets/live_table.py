"""A DataTable whose in-place updates repaint only the rows that changed.

``DataTable.update_cell`` bumps one table-wide counter that is part of every render-cache key, so a
single changed cell makes every visible cell render again. Refreshing 64 replicas and 200 prefixes
every second that way costs most of the refresh budget. :meth:`LiveTable.set_cells` writes the new
values and evicts only the changed rows' cached renders. It relies on DataTable internals of the
pinned Textual (8.2.8); the console's snapshot tests catch a stale paint if they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

__all__ = ["LiveTable"]

CellType = TypeVar("CellType")


class LiveTable(DataTable[CellType], Generic[CellType]):
    """Adds :meth:`set_cells` (cheap in-place update) and :meth:`flush_cells` (evict, repaint)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._changed_rows: set[RowKey] = set()

    def set_cells(self, row_key: str, values: Mapping[str, CellType]) -> None:
        """Replace cells of an existing row; the paint happens after :meth:`flush_cells`."""
        key = RowKey(row_key)
        row = self._data[key]
        for column, value in values.items():
            row[ColumnKey(column)] = value
        self._changed_rows.add(key)

    def flush_cells(self) -> None:
        """Drop the cached renders of the rows changed since the last flush, then repaint."""
        if not self._changed_rows:
            return
        changed, self._changed_rows = self._changed_rows, set()
        indices = {self._row_locations.get(key) for key in changed}
        for cache, matches in (
            (self._cell_render_cache, lambda k: k[0] in changed),
            (self._row_render_cache, lambda k: k[0] in changed),
            (self._row_renderable_cache, lambda k: k[1] in indices),
        ):
            for cache_key in [k for k in cache.keys() if matches(k)]:  # noqa: SIM118 - LRUCache
                cache.discard(cache_key)
        self._line_cache.clear()
        self.refresh()
