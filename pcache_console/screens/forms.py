"""Modals that ask for a little input before a router action: pin a prefix, prewarm prefixes.

Both open with the focus on Cancel and show what the action will touch; they return the filled-in
request (or ``None`` on Cancel/Esc) and leave the API call to the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from pcache.api import PrefixRow, PrewarmPrefix
from pcache.operator.prefixes_file import read_prefixes
from pcache_console.cells import percent

__all__ = ["PinForm", "PinScreen", "PrewarmForm", "PrewarmScreen", "read_prefix_file"]


@dataclass(frozen=True)
class PinForm:
    name: str
    text: str | None  # None: re-pin the registered prefix of that name with its own text
    replicas: list[str]


@dataclass(frozen=True)
class PrewarmForm:
    prefixes: list[PrewarmPrefix]
    copies: int | None


def read_prefix_file(path: str) -> list[PrewarmPrefix]:
    """Prefixes from a file in the format ``pcache prewarm`` reads (text, JSONL or YAML).

    Raises ``ValueError`` with a readable ``FILE:LINE: message`` when the file cannot be used."""
    prefixes = read_prefixes(Path(path).expanduser())
    if not prefixes:
        raise ValueError(f"{path} holds no prefix")
    return prefixes


class _Form(ModalScreen[object]):
    AUTO_FOCUS = "#cancel"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        try:
            self.dismiss(self.collect())
        except ValueError as exc:
            self.query_one("#form-error", Static).update(Text(f"✗ {exc}", style="bold red"))

    def collect(self) -> object:
        raise NotImplementedError

    def action_cancel(self) -> None:
        self.dismiss(None)


class PinScreen(_Form):
    """Pin the selected prefix to replicas (default: its current owners)."""

    def __init__(self, row: PrefixRow, default_replicas: list[str]) -> None:
        super().__init__()
        self._row = row
        self._default = default_replicas
        self._registered = row.name is not None and row.kind != "hot"

    def compose(self) -> ComposeResult:
        row = self._row
        name = row.name or f"hot-{row.key[:8]}"
        served = {n: c for n, c in row.by_replica.items() if c.share > 0}
        body = Text()
        body.append(f"Pin {name}: ", style="bold")
        body.append("requests matching it will go only to the replicas below.\n")
        body.append(f"Now owned by {', '.join(row.owners) or 'nobody'}; served by ")
        body.append(", ".join(f"{n} {percent(c.share, 0)}" for n, c in served.items()) or "nobody")
        body.append(f"\n{row.sessions} sessions and {row.requests} requests in the window may move.\n")
        if self._registered:
            body.append("The router knows its text; a file is needed only to replace it.", style="dim")
        else:
            body.append(
                "The router keeps no text of a hot prefix: give the file holding its text.", style="dim"
            )
        with Vertical(id="dialog"):
            yield Static(f"Pin prefix {name}", id="dialog-title")
            yield Static(body, id="dialog-body")
            yield Input(name, id="pin-name", placeholder="pin name")
            yield Input(", ".join(self._default), id="pin-replicas", placeholder="replicas, comma-separated")
            yield Input("", id="pin-file", placeholder="file with the prefix's text (optional if registered)")
            yield Static("", id="form-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Pin", id="confirm", variant="warning")

    def collect(self) -> PinForm:
        name = self.query_one("#pin-name", Input).value.strip()
        if not name:
            raise ValueError("a pin needs a name")
        replicas = [r.strip() for r in self.query_one("#pin-replicas", Input).value.split(",") if r.strip()]
        if not replicas:
            raise ValueError("name at least one replica")
        path = self.query_one("#pin-file", Input).value.strip()
        if path:
            return PinForm(name=name, text=read_prefix_file(path)[0].text, replicas=replicas)
        if self._registered and name == self._row.name:
            return PinForm(name=name, text=None, replicas=replicas)
        raise ValueError("give the file holding the prefix's text")


class PrewarmScreen(_Form):
    """Prewarm the prefixes in a file; the selected prefix's name is offered for a single one."""

    def __init__(self, row: PrefixRow | None) -> None:
        super().__init__()
        self._row = row

    def compose(self) -> ComposeResult:
        body = Text("Prewarm the prefixes in a file (the format `pcache prewarm` reads).\n")
        body.append("The router plans where each goes; you confirm the plan next.", style="dim")
        name = self._row.name if self._row is not None and self._row.name else ""
        with Vertical(id="dialog"):
            yield Static("Prewarm", id="dialog-title")
            yield Static(body, id="dialog-body")
            yield Input("", id="prewarm-file", placeholder="file of prefixes")
            yield Input(name, id="prewarm-name", placeholder="name (when the file holds one prefix)")
            yield Input("", id="prewarm-copies", placeholder="copies (default: the router's)")
            yield Static("", id="form-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Plan", id="confirm", variant="primary")

    def collect(self) -> PrewarmForm:
        path = self.query_one("#prewarm-file", Input).value.strip()
        raw_copies = self.query_one("#prewarm-copies", Input).value.strip()
        copies: int | None = None
        if raw_copies:
            if not raw_copies.isdigit() or int(raw_copies) < 1:
                raise ValueError("copies must be a whole number of at least 1")
            copies = int(raw_copies)
        if not path:
            raise ValueError("give the file holding the prefixes' text")
        prefixes = read_prefix_file(path)
        name = self.query_one("#prewarm-name", Input).value.strip() or None
        if name is not None and len(prefixes) == 1 and prefixes[0].name is None:
            prefixes = [prefixes[0].model_copy(update={"name": name})]
        return PrewarmForm(prefixes=prefixes, copies=copies)
