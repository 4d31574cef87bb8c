"""The header line: where we are connected, the fleet in four numbers, and how fresh they are."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from pcache.api import StatusSnapshot
from pcache_console.cells import percent, rate

__all__ = ["StatusHeader"]


class StatusHeader(Static):
    """Router address, policy, requests/s, hit rate, drift, "updated Ns ago", paused and refresh."""

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
        text = Text()
        text.append(" pcache top ", style="bold reverse")
        text.append(f" {label}", style="bold")
        if snapshot is not None:
            router = snapshot.router
            text.append(f"  policy {router.policy}")
            text.append(f"  {rate(router.requests_per_s)} req/s")
            text.append(f"  hit {percent(router.hit_rate)}")
            text.append(f"  drift {percent(router.drift_ratio)}")
        if age_s is None:
            text.append("  connecting…", style="italic")
        else:
            ago = f"  updated {age_s:.0f}s ago"
            text.append(ago + (" STALE" if stale else ""), style="bold reverse red" if stale else "dim")
        text.append(f"  every {refresh_s:g}s", style="dim")
        if paused:
            text.append("  PAUSED", style="bold reverse yellow")
        if readonly:
            text.append("  READONLY", style="bold")
        self.update(text)
