"""The ``?`` screen: every key, and which ones ``--readonly`` or direct mode switched off."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]

KEYS: tuple[tuple[str, str, str | None], ...] = (
    # key, what it does, the action it maps to (for enabled/disabled)
    ("?", "this help", None),
    ("/", "filter replicas (Esc clears)", None),
    ("N S K H T W E R", "sort by name, state, KV, hit rate, TTFT, waiting, sessions, req/s", None),
    ("space", "pause / resume polling", None),
    ("+ / -", "refresh slower / faster", None),
    ("Enter", "drill into the selected replica (Esc returns)", None),
    ("tab", "move between the fleet table and the heat map", None),
    ("d", "drain the selected replica", "drain"),
    ("U", "undrain the selected replica", "undrain"),
    ("p", "pin the selected prefix (a hot one needs its text from a file)", "pin"),
    ("u", "unpin the selected prefix", "unpin"),
    ("w", "prewarm the prefixes in a file", "prewarm"),
    ("e", "the router's event log (Esc returns)", None),
    ("o", "re-sort the heat map by requests (rows otherwise keep their places)", None),
    ("ctrl+p", "command palette", None),
    ("q", "quit", None),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss_help", "Close"),
    ]

    def __init__(self, disabled: dict[str, str]) -> None:
        """``disabled`` maps an action to the reason it is off (``--readonly``, direct mode)."""
        super().__init__()
        self._disabled = disabled

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_column()
        for key, what, action in KEYS:
            reason = self._disabled.get(action or "")
            table.add_row(
                key,
                Text(what, style="dim strike" if reason else ""),
                Text(f"disabled: {reason}", style="italic") if reason else "",
            )
        with VerticalScroll(id="dialog"):
            yield Static("pcache top — keys", id="dialog-title")
            yield Static(table)
            yield Static(
                Text(
                    "KV bar: green, yellow 'high' from 65%, red 'FULL' from 85%.  Heat map: each "
                    "cell is the replica's % of the prefix's requests (██ all), shaded by level; "
                    "o = owner, P = pinned.",
                    style="dim",
                )
            )

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
