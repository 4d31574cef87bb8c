"""`pcache prefixes`: the heat map of prefixes x replicas as text, with owner and pin marks."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pcache.api import PrefixCell, PrefixHeat, PrefixRow
from pcache_cli.context import get_context
from pcache_cli.output import OutputOpt, emit, percent

__all__ = ["heat_cell", "register", "render_heat"]

SHADES = " ░▒▓█"
_HEAT_STYLES = ("dim", "blue", "cyan", "yellow", "red")


def heat_cell(cell: PrefixCell | None) -> Text:
    """A shaded cell for the replica's share of the prefix's requests, plus O (owner) and P (pinned)."""
    share = cell.share if cell else 0.0
    level = 0 if share <= 0 else min(len(SHADES) - 1, 1 + int(share * (len(SHADES) - 1) - 1e-9))
    text = Text(SHADES[level] * 3, style=_HEAT_STYLES[level])
    text.append(f" {share * 100:3.0f}%" if cell and cell.requests else "   -")
    marks = ("O" if cell and cell.owner else " ") + ("P" if cell and cell.pinned else " ")
    text.append(f" {marks}", style="bold")
    return text


def _label(row: PrefixRow) -> str:
    return row.name or row.key[:12]


def render_heat(heat: PrefixHeat, wide: bool = False) -> RenderableType:
    """Rows are prefixes (hottest first, as the router ranks them), columns the replicas (sorted)."""
    replicas = sorted(heat.replicas)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("PREFIX", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("REQ", justify="right", no_wrap=True)
    table.add_column("SESS", justify="right", no_wrap=True)
    table.add_column("PRED HIT", justify="right", no_wrap=True)  # the router's prediction
    if wide:
        table.add_column("TOKENS", justify="right", no_wrap=True)
        table.add_column("OWNERS", no_wrap=True)
    for name in replicas:
        table.add_column(name, no_wrap=True)
    if wide:
        table.add_column("TEXT", no_wrap=True, max_width=40)
    for row in heat.prefixes:
        cells: list[str | Text] = [
            _label(row),
            row.kind,
            str(row.requests),
            str(row.sessions),
            percent(row.hit_rate),
        ]
        if wide:
            cells += [str(row.tokens), ", ".join(row.owners) or "-"]
        cells += [heat_cell(row.by_replica.get(name)) for name in replicas]
        if wide:
            cells.append((row.text_head or "").replace("\n", "\\n"))
        table.add_row(*cells)
    window = f"{heat.window_s / 60:.0f}m" if heat.window_s >= 60 else f"{heat.window_s:.0f}s"
    legend = Text(
        f"share of each prefix's requests over the last {window}: {SHADES[1:]} low→high; O owner, P pinned; "
        "PRED HIT is the router's predicted cache hit rate, not the engine's",
        style="dim",
    )
    if not heat.prefixes:
        return Group(Text("no prefixes seen in the window", style="dim"), legend)
    return Group(table, Text(""), legend)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Fleet")
    def prefixes(
        ctx: typer.Context,
        top: Annotated[
            int, typer.Option("--top", "-n", help="Show the N hottest prefixes.", min=1, max=1000)
        ] = 20,
        output: OutputOpt = None,
    ) -> None:
        """The prefix heat map: which replicas serve each hot prefix, who owns it, what is pinned.

        Examples:

          pcache prefixes

          pcache prefixes -n 50 -o wide

          pcache prefixes -o yaml
        """
        cli = get_context(ctx)
        with cli.admin() as client:
            heat = client.prefixes(top=top)
        fmt = cli.output_for(output)
        emit(cli, fmt, document=heat, items=heat.prefixes, render=lambda wide: render_heat(heat, wide=wide))
