"""`pcache top`: the live console. Textual is imported only inside the command, so every other
command (and ``pcache status`` in particular) starts without loading it."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from pcache_cli.common import ExitCode, fail, info
from pcache_cli.context import get_context

__all__ = ["register"]

NO_TTY_HINT = (
    "pcache top needs a terminal: printed `pcache status` instead (run it in a terminal for the console)"
)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command(rich_help_panel="Fleet")
    def top(
        ctx: typer.Context,
        refresh: Annotated[
            float,
            typer.Option("--refresh", help="Seconds between polls (+/- change it live).", min=0.25, max=60),
        ] = 2.0,
        readonly: Annotated[
            bool, typer.Option("--readonly", help="Watch only: every action key is disabled.")
        ] = False,
        replicas: Annotated[
            str | None,
            typer.Option(
                "--replicas",
                help="Direct mode: comma-separated replica URLs (or NAME=URL), watched without a router.",
            ),
        ] = None,
        prometheus: Annotated[
            str | None,
            typer.Option(
                "--prometheus",
                envvar="PCACHE_PROMETHEUS",
                help="Prometheus URL: fill the charts with the last window of history first.",
            ),
        ] = None,
        window: Annotated[
            float, typer.Option("--window", help="Seconds of history the charts cover.", min=60)
        ] = 900.0,
        top_prefixes: Annotated[
            int, typer.Option("--top-prefixes", help="Rows of the prefix heat map.", min=1, max=500)
        ] = 30,
    ) -> None:
        """Live console: fleet table, prefix heat map, affinity drift, and drain/pin/prewarm actions.

        Examples:

          pcache top

          pcache top --readonly --refresh 5

          pcache top --replicas http://gpu1:8000,http://gpu2:8000
        """
        cli = get_context(ctx)
        if prometheus is None:  # flag and PCACHE_PROMETHEUS come first, then the CLI config file
            prometheus = cli.prometheus
        urls = [u.strip() for u in (replicas or "").split(",") if u.strip()]
        if replicas is not None and not urls:
            fail("--replicas needs at least one URL", ExitCode.USAGE)
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            _print_status(ctx, urls)
            info(NO_TTY_HINT)
            return
        if cli.no_color:
            os.environ["NO_COLOR"] = "1"  # Textual turns monochrome on it
        from pcache_console.launch import build_app

        build_app(
            admin_url=cli.router,
            token=cli.token,
            timeout_s=cli.timeout,
            replicas=urls,
            refresh_s=refresh,
            readonly=readonly,
            prometheus_url=prometheus,
            window_s=window,
            top_prefixes=top_prefixes,
        ).run()


def _print_status(ctx: typer.Context, urls: list[str]) -> None:
    """What `pcache status` prints, with its renderer, from the router or the replicas directly."""
    from pcache.direct import replica_names
    from pcache_cli.status import direct_source, render_status, router_source

    cli = get_context(ctx)
    source = direct_source(replica_names(urls), cli.timeout) if urls else router_source(cli)
    cli.console().print(render_status(source()))
