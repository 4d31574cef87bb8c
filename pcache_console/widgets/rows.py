"""A keyed table of one-line rows, updated in place, that paints only what changed.

Each row is one pre-laid-out Text (the widgets that use it line their columns up themselves), is
rendered to a Strip once per change, and is cropped, scrolled and cursor-styled per paint. The
cursor row is drawn in reverse video (underlined when the table is not focused): a bar that reads
without colour and that "bold" (a value that just changed) cannot be mistaken for. The
first ``fixed_width`` cells of every row stay put when the table scrolls sideways (the row's name).

Why not ``DataTable``: its render caches are keyed on one table-wide update counter, so a single
changed cell re-renders every visible cell. At 64 replicas and 200 prefixes refreshed every poll
that alone went past the console's 50 ms refresh budget (see ``bench/console_refresh.py``).
Rows here are still updated in place by key, and the cursor stays on its row across updates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["RowTable"]


class RowTable(ScrollView, can_focus=True):
    """Rows keyed by string, a header line, a row cursor; Enter selects the cursor's row."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("enter", "select", "Select", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"rowtable--header", "rowtable--cursor"}
    DEFAULT_CSS = """
    RowTable {
        height: auto;
        padding: 0 1;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    RowTable > .rowtable--header {
        text-style: bold;
        background: $panel;
    }
    RowTable > .rowtable--cursor {
        background: $block-cursor-blurred-background;
        text-style: underline;
    }
    RowTable:focus > .rowtable--cursor {
        text-style: reverse;
    }
    """

    class _RowMessage(Message):
        """Something happened on the row ``key`` of ``table``."""

        def __init__(self, table: RowTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> RowTable:
            return self.table

    class Highlighted(_RowMessage):
        """The cursor moved onto the row ``key``."""

    class Selected(_RowMessage):
        """Enter was pressed on the row ``key``."""

    cursor_row: reactive[int] = reactive(0, repaint=False)

    def __init__(self, *, fixed_width: int = 0, id: str | None = None) -> None:
        super().__init__(id=id)
        self.fixed_width = fixed_width
        self._keys: list[str] = []
        self._texts: dict[str, Text | Callable[[], Text]] = {}
        self._strips: dict[str, Strip] = {}
        self._strip_style: Style | None = None  # the base style baked into the cached strips
        self._header = Text()
        self._header_strip: Strip | None = None
        self._width = 0

    # ---- data -----------------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._keys)

    @property
    def row_count(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def row_text(self, key: str) -> Text:
        """The row's text (built now if it was set lazily and not shown yet)."""
        text = self._texts[key]
        if not isinstance(text, Text):
            text = self._texts[key] = text()
        return text

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or ``None`` when the table is empty."""
        return self._keys[self.cursor_row] if self._keys else None

    def set_header(self, header: Text) -> None:
        self._header = header
        self._header_strip = None
        self._width = max(self._width, header.cell_len)

    def set_row(self, key: str, text: Text | Callable[[], Text]) -> None:
        """Add the row ``key`` at the end, or replace its text where it is.

        ``text`` may be a function that builds it: it runs only when the row is painted (or
        asked for), so rows that are scrolled out of view cost nothing per refresh. The table's
        width then comes from :meth:`set_width`."""
        if key not in self._texts:
            self._keys.append(key)
        self._texts[key] = text
        self._strips.pop(key, None)
        if isinstance(text, Text):
            self._width = max(self._width, text.cell_len)

    def set_width(self, width: int) -> None:
        """The width of the widest row, for rows set lazily."""
        self._width = width

    def remove_row(self, key: str) -> None:
        if key in self._texts:
            selected = self.selected_key
            self._keys.remove(key)
            del self._texts[key]
            self._strips.pop(key, None)
            self._keep_cursor_on(selected)

    def set_order(self, keys: Iterable[str]) -> None:
        """Put the rows in this order (keys not listed keep their relative order at the end)."""
        wanted = [key for key in keys if key in self._texts]
        listed = set(wanted)
        rest = [key for key in self._keys if key not in listed]
        order = wanted + rest
        if order != self._keys:
            selected = self.selected_key
            self._keys = order
            self._keep_cursor_on(selected)

    def commit(self) -> None:
        """After a batch of changes: resize the scrollable area and repaint."""
        self.virtual_size = Size(self._width, len(self._keys) + 1)
        self.cursor_row = min(self.cursor_row, max(len(self._keys) - 1, 0))
        self._scroll_to_cursor()  # the cursor's row may have moved with a re-sort
        self.refresh()

    def move_cursor(self, row: int) -> None:
        self.cursor_row = min(max(row, 0), max(len(self._keys) - 1, 0))

    def _keep_cursor_on(self, key: str | None) -> None:
        if key is not None and key in self._texts:
            self.set_reactive(RowTable.cursor_row, self._keys.index(key))

    # ---- cursor and keys ------------------------------------------------------------------------

    def watch_cursor_row(self, previous: int, row: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        if self._keys and previous != row:
            self.post_message(self.Highlighted(self, self._keys[row]))

    def _visible_rows(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    def _scroll_to_cursor(self) -> None:
        top = round(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + self._visible_rows():
            self.scroll_to(y=self.cursor_row - self._visible_rows() + 1, animate=False)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * self._visible_rows())

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self._keys) - 1)

    def action_select(self) -> None:
        if (key := self.selected_key) is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: events.Click) -> None:
        row = round(self.scroll_offset.y) + event.y - 1
        if 0 <= row < len(self._keys):
            if row == self.cursor_row and event.chain >= 2:
                self.action_select()
            self.move_cursor(row)

    # ---- paint ----------------------------------------------------------------------------------

    def _strip(self, text: Text) -> Strip:
        return Strip(list(text.render(self.app.console)), text.cell_len)

    def _crop(self, strip: Strip, width: int, base: Style) -> Strip:
        """The fixed part, then the part scrolled sideways, to exactly ``width`` cells."""
        scroll_x = round(self.scroll_offset.x)
        fixed = min(self.fixed_width, width)
        if not fixed or not scroll_x:
            return strip.crop_extend(scroll_x, scroll_x + width, base)
        head = strip.crop_extend(0, fixed, base)
        tail = strip.crop_extend(fixed + scroll_x, fixed + scroll_x + width - fixed, base)
        return Strip.join([head, tail])

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            if self._header_strip is None:
                self._header_strip = self._strip(self._header)
            style = self.get_component_rich_style("rowtable--header")
            return self._crop(self._header_strip, width, base).apply_style(style).apply_style(base)
        index = round(self.scroll_offset.y) + y - 1
        if index >= len(self._keys):
            return Strip([Segment(" " * width, base)], width)
        if base != self._strip_style:
            self._strips.clear()
            self._strip_style = base
        key = self._keys[index]
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._strip(self.row_text(key)).apply_style(base)
        line = self._crop(strip, width, base)
        if index == self.cursor_row:
            line = line.apply_style(self.get_component_rich_style("rowtable--cursor"))
        return line
