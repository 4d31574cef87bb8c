"""`pcache routers`: every router sharing this router's state store, from their heartbeats."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from pcache.api import RouterStatus
from pcache_cli.context import get_context
from pcache_cli.output import OutputOpt, emit

__all__ = ["register", "routers_table"]


def routers_table(routers: list[RouterStatus], wide: bool = False) -> Table:
    """One row per router: the one that answered first, a lost one flagged LOST beside its colour."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    headers = ["ROUTER", "STATE", "URL", "VERSION", "REQ/S", "IN-FLIGHT", "HEARTBEAT"]
    if wide:
        headers += ["ADMIN URL", "UP"]
    for header in headers:
        table.add_column(header, no_wrap=True)
    for router in routers:
        state = Text("LOST", style="bold red") if router.lost else Text("ok", style="green")
        name = f"{router.id} *" if router.this_router else router.id
        cells: list[str | Text] = [
            name,
            state,
            router.url,
            router.version,
            f"{router.requests_per_s:.1f}",
            str(router.in_flight),
            f"{router.heartbeat_age_s:.1f}s ago",
        ]
        if wide:
            cells += [router.admin_url or "-", f"{router.heartbeat_at - router.started_at:.0f}s"]
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    @app.command("routers", rich_help_panel="Fleet")
    def routers(ctx: typer.Context, output: OutputOpt = None) -> None:
        """List the routers sharing the state store (* = the one answering); flags a lost one.

        Examples:

          pcache routers

          pcache routers -o custom-columns=ID:.id,URL:.admin_url --no-headers
        """
        cli = get_context(ctx)
        with cli.admin() as client:
            result = client.routers()
        fmt = cli.output_for(output)
        emit(cli, fmt, document=result, items=result, render=lambda wide: routers_table(result, wide=wide))
