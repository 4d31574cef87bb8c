"""`pcache events`: the router's event log (drains, pins, prewarm results, state changes, bursts).

The console's event view reads the same list from the same admin endpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from pcache.api import RouterEvent
from pcache_cli.context import CliContext, get_context
from pcache_cli.output import OutputFormat, OutputOpt, emit

__all__ = ["event_table", "register"]

_KIND_STYLES = {"replica_state": "yellow", "home_moves": "magenta", "prewarm": "cyan"}


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _outcome(event: RouterEvent) -> Text:
    if event.ok is None:
        return Text("")
    return Text("ok", style="green") if event.ok else Text("FAILED", style="bold red")


def event_table(events: Sequence[RouterEvent], *, headers: bool = True) -> Table:
    """One row per event, oldest first: UTC time, kind, subject, outcome, message."""
    table = Table(box=None, pad_edge=False, header_style="bold", show_header=headers)
    for title in ("TIME (UTC)", "KIND", "SUBJECT", "RESULT", "MESSAGE"):
        table.add_column(title, no_wrap=title != "MESSAGE")
    for event in events:
        subject = event.replica or event.prefix or event.job or "-"
        table.add_row(
            _when(event.t),
            Text(event.kind, style=_KIND_STYLES.get(event.kind, "")),
            subject,
            _outcome(event),
            event.message,
        )
    return table


def _emit(cli: CliContext, events: Sequence[RouterEvent], fmt: OutputFormat, headers: bool) -> None:
    if events or headers or fmt.is_machine:
        emit(
            cli,
            fmt,
            document=list(events),
            items=list(events),
            render=lambda _wide: event_table(events, headers=headers and cli.headers),
        )


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Fleet")
    def events(
        ctx: typer.Context,
        output: OutputOpt = None,
        limit: Annotated[
            int, typer.Option(help="Show at most this many (the newest).", min=1, max=1000)
        ] = 50,
        kind: Annotated[
            list[str] | None,
            typer.Option("--kind", help="Only events of this kind (repeatable): drain, pin, prewarm, ..."),
        ] = None,
        watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep printing new events.")] = False,
        interval: Annotated[float, typer.Option(help="Seconds between polls with --watch.", min=0.1)] = 2.0,
    ) -> None:
        """What the router did and saw, oldest first: drains, pins, prewarms with their results,
        replica state changes and bursts of session-home moves.

        Examples:

          pcache events

          pcache events --kind replica_state --kind drain -o json

          pcache events -w
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        wanted = set(kind or ())

        def keep(found: Sequence[RouterEvent]) -> list[RouterEvent]:
            return [e for e in found if not wanted or e.kind in wanted]

        with cli.admin() as client:
            page = client.events(limit=limit)
            _emit(cli, keep(page.events), fmt, headers=True)
            if not watch:
                return
            last = page.last_id
            try:
                while True:
                    sys.stdout.flush()
                    time.sleep(interval)
                    page = client.events(after=last)
                    last = page.last_id
                    fresh = keep(page.events)
                    if fresh:
                        # One document per poll would not parse as a stream: jsonl lines instead.
                        again = OutputFormat.JSONL if fmt in (OutputFormat.JSON, OutputFormat.YAML) else fmt
                        _emit(cli, fresh, again, headers=False)
            except KeyboardInterrupt:
                return
