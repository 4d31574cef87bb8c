"""The header line: where we are connected, how fresh the data is, and the fleet in a few numbers.

Freshness comes right after the address (``STALE`` must survive an 80-column terminal); the rest is
dropped from the least important end when the line does not fit.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from pcache.api import StatusSnapshot
from pcache_console.cells import error_rate, percent, rate

__all__ = ["StatusHeader"]


class StatusHeader(Static):
    """Router address, freshness, paused/readonly, req/s, hit, errors, drift, policy, refresh."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._parts: list[tuple[int, Text]] = []

    def show(
        self,
        *,
        label: str,
        snapshot: StatusSnapshot | None,
        age_s: float | None,
        stale: bool,
        paused: bool,
        refresh_s: float,
        readonly: bool,
    ) -> None:
        # (priority, text): lower numbers are kept longer when the line is too narrow.
        parts: list[tuple[int, Text]] = [(0, Text(" pcache top ", style="bold reverse"))]
        parts.append((0, Text(f" {label}", style="bold")))
        if age_s is None:
            parts.append((0, Text("  connecting…", style="italic")))
        elif stale:
            parts.append((0, Text(f"  STALE {age_s:.0f}s", style="bold reverse red")))
        else:
            parts.append((6, Text(f"  updated {age_s:.0f}s ago", style="dim")))
        if paused:
            parts.append((0, Text("  PAUSED", style="bold reverse yellow")))
        if readonly:
            parts.append((1, Text("  READONLY", style="bold")))
        if snapshot is not None:
            router, fleet = snapshot.router, snapshot.all
            parts.append((2, Text(f"  {rate(router.requests_per_s)} req/s")))
            parts.append((3, Text(f"  hit {percent(router.hit_rate)}")))
            errors = Text("  err ")
            errors.append_text(error_rate(fleet.error_rate))
            parts.append((4, errors))
            if fleet.window_s:
                parts.append((8, Text(f"  over {fleet.window_s:g}s", style="dim")))
            parts.append((5, Text(f"  drift {percent(router.drift_ratio)}")))
            parts.append((7, Text(f"  policy {router.policy}")))
        parts.append((9, Text(f"  every {refresh_s:g}s", style="dim")))
        self._parts = parts
        self._render_parts()

    def on_resize(self) -> None:
        self._render_parts()

    def _render_parts(self) -> None:
        width = self.size.width or 10_000
        parts = list(self._parts)
        while len(parts) > 1 and sum(text.cell_len for _, text in parts) > width:
            worst = max(range(len(parts)), key=lambda i: (parts[i][0], i))
            if parts[worst][0] == 0:
                break
            del parts[worst]
        self.update(Text.assemble(*(text for _, text in parts)))
