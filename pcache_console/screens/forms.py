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

from pcache.api import PrefixRow
from pcache_console.cells import percent

__all__ = ["PinForm", "PinScreen", "PrewarmForm", "PrewarmScreen", "read_prefix_file"]

TEXT_HEAD_LIMIT = 80  # the router sends at most this many characters of a prefix's text


@dataclass(frozen=True)
class PinForm:
    name: str
    text: str
    replicas: list[str]


@dataclass(frozen=True)
class PrewarmForm:
    texts: list[tuple[str | None, str]]  # (name, text)
    copies: int | None


def read_prefix_file(path: str) -> list[tuple[str | None, str]]:
    """Prefixes from a file: one prefix per block, blocks separated by a line holding only ``---``.

    Raises ``ValueError`` with a readable message when the file cannot be read or holds nothing.
    """
    try:
        raw = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    blocks = [block.strip("\n") for block in raw.split("\n---\n")]
    texts = [(None, block) for block in blocks if block.strip()]
    if not texts:
        raise ValueError(f"{path} holds no prefix text")
    return texts


def full_text(row: PrefixRow | None) -> str | None:
    """The prefix's complete text when the heat map carries all of it (short prefixes only)."""
    if row is None or row.text_head is None or len(row.text_head) >= TEXT_HEAD_LIMIT:
        return None
    return row.text_head


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

    def compose(self) -> ComposeResult:
        row = self._row
        name = row.name or f"hot-{row.key[:8]}"
        served = {n: c for n, c in row.by_replica.items() if c.share > 0}
        body = Text()
        body.append(f"Pin {name}: ", style="bold")
        body.append("requests matching it will go only to the replicas below.\n")
        body.append(f"Now owned by {', '.join(row.owners) or 'nobody'}; served by ")
        body.append(", ".join(f"{n} {percent(c.share, 0)}" for n, c in served.items()) or "nobody")
        body.append(f"\n{row.sessions} sessions and {row.requests} requests in the window may move.")
        text = full_text(row)
        with Vertical(id="dialog"):
            yield Static(f"Pin prefix {name}", id="dialog-title")
            yield Static(body, id="dialog-body")
            yield Input(name, id="pin-name", placeholder="pin name")
            yield Input(", ".join(self._default), id="pin-replicas", placeholder="replicas, comma-separated")
            yield Input(
                "",
                id="pin-file",
                placeholder="text already known" if text else "file with the prefix's full text (required)",
            )
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
        text = read_prefix_file(path)[0][1] if path else full_text(self._row)
        if text is None:
            raise ValueError("the router sends only the first characters of this prefix; give a file")
        return PinForm(name=name, text=text, replicas=replicas)


class PrewarmScreen(_Form):
    """Prewarm the selected prefix (when its text is known) or the prefixes in a file."""

    def __init__(self, row: PrefixRow | None) -> None:
        super().__init__()
        self._row = row

    def compose(self) -> ComposeResult:
        known = full_text(self._row)
        body = Text()
        if known is not None and self._row is not None:
            body.append(f"Prewarm {self._row.name or self._row.key[:10]} ", style="bold")
            body.append("(leave the file empty), or the prefixes in a file (blocks split by ---).\n")
        else:
            body.append("Prewarm the prefixes in a file (one per block, blocks split by a --- line).\n")
        body.append("The router plans where each goes; you confirm the plan next.", style="dim")
        with Vertical(id="dialog"):
            yield Static("Prewarm", id="dialog-title")
            yield Static(body, id="dialog-body")
            yield Input("", id="prewarm-file", placeholder="file of prefixes")
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
        if path:
            return PrewarmForm(texts=read_prefix_file(path), copies=copies)
        known = full_text(self._row)
        if known is None or self._row is None:
            raise ValueError("give a file: the selected prefix's full text is not known here")
        return PrewarmForm(texts=[(self._row.name, known)], copies=copies)
