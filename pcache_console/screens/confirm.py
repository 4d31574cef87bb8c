"""A yes/no modal for operator actions: it shows the blast radius and opens with Cancel focused.

With ``recompute`` the body is rebuilt every ``every_s`` seconds while the dialog is open (the
console keeps polling behind it), so the blast radius shown is the one the confirm button acts on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

__all__ = ["ConfirmScreen"]


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with ``True`` only when the confirm button is pressed; Esc and Cancel give ``False``."""

    AUTO_FOCUS = "#cancel"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("right", "app.focus_next", "Next", show=False),
        Binding("left", "app.focus_previous", "Previous", show=False),
    ]

    def __init__(
        self,
        title: str,
        body: RenderableType,
        confirm_label: str,
        *,
        danger: bool = True,
        recompute: Callable[[], Awaitable[RenderableType | None]] | None = None,
        every_s: float = 2.0,
    ) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._confirm_label = confirm_label
        self._danger = danger
        self._recompute = recompute
        self._every_s = every_s
        self.recomputed = 0  # times the body was rebuilt, for tests

    def on_mount(self) -> None:
        if self._recompute is not None:
            self.set_interval(self._every_s, self._refresh_body)

    async def _refresh_body(self) -> None:
        assert self._recompute is not None
        body = await self._recompute()
        if body is not None and self.is_attached:
            self.query_one("#dialog-body", Static).update(body)
            self.recomputed += 1

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title")
            yield Static(self._body, id="dialog-body")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(
                    self._confirm_label, id="confirm", variant="error" if self._danger else "primary"
                )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)
