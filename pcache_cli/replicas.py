"""`pcache replicas` (list), `replicas add` and `replicas remove`: fleet membership."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from pcache.api import ReplicaIn, ReplicaStatus
from pcache_cli.common import ExitCode, fail, info
from pcache_cli.completion import complete_replica
from pcache_cli.context import CliContext, get_context
from pcache_cli.drain import confirm_or_fail, emit_blast_radius, fail_on_handover, render_blast_radius
from pcache_cli.output import OutputFormat, OutputOpt, bar, emit, state_text

__all__ = ["register", "replicas_table"]


def replicas_table(replicas: list[ReplicaStatus], wide: bool = False) -> Table:
    """Membership: name, state, engine, URL (plus group, weight and scrape health when wide)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    headers = ["NAME", "STATE", "ENGINE", "URL", "IN-FLIGHT", "SESSIONS"]
    if wide:
        headers += ["GROUP", "WEIGHT", "KV", "SCRAPED", "LAST ERROR"]
    for header in headers:
        table.add_column(header, no_wrap=True)
    for replica in sorted(replicas, key=lambda r: r.name):
        cells: list[str | Text] = [
            replica.name,
            state_text(replica.state, replica.stale),
            replica.engine,
            replica.url,
            str(replica.in_flight),
            str(replica.sessions),
        ]
        if wide:
            cells += [
                replica.group or "-",
                f"{replica.weight:g}",
                bar(replica.kv_usage),
                "-" if replica.scrape_age_s is None else f"{replica.scrape_age_s:.1f}s",
                replica.last_error or "-",
            ]
        table.add_row(*cells)
    return table


def _emit(cli: CliContext, replicas: list[ReplicaStatus], fmt: OutputFormat, single: bool = False) -> None:
    replicas = sorted(replicas, key=lambda r: r.name)
    emit(
        cli,
        fmt,
        document=replicas[0] if single else replicas,
        items=replicas,
        render=lambda wide: replicas_table(replicas, wide=wide),
    )


def warn_if_not_answering(added: ReplicaStatus) -> None:
    """Accepted but not serving yet: say so on stderr (exit stays 0).

    Registering an engine that is still loading its weights is a normal rollout step, so the router
    keeps it (it gets no traffic and joins on its first good health check); a wrong URL shows here
    at once instead of passing silently."""
    if added.state == "healthy":
        return
    reason = added.last_error or "no health check answered yet"
    info(
        f"warning: replica {added.name} is {added.state.upper()}: {reason}; it gets no traffic until "
        f"{added.url} answers (wrong URL? `pcache replicas remove {added.name}`)"
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(  # its help is the callback's docstring, with the examples
        no_args_is_help=False,
        invoke_without_command=True,
    )
    app.add_typer(group, name="replicas", rich_help_panel="Fleet")

    @group.callback()
    def replicas(ctx: typer.Context, output: OutputOpt = None) -> None:
        """List, add and remove replicas: `pcache replicas` lists them with their state.

        Examples:

          pcache replicas

          pcache replicas -o wide

          pcache replicas -o custom-columns=NAME:.name,STATE:.state --no-headers
        """
        if ctx.invoked_subcommand is not None:
            return
        cli = get_context(ctx)
        with cli.admin() as client:
            result = client.replicas()
        _emit(cli, result, cli.output_for(output))

    @group.command("add")
    def add(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Name for the new replica.")],
        url: Annotated[str, typer.Argument(help="Base URL of its OpenAI-compatible server.")],
        engine: Annotated[str, typer.Option(help="vllm, sglang, trtllm, ... (default: detect).")] = "auto",
        group_name: Annotated[str | None, typer.Option("--group", help="Replica group.")] = None,
        weight: Annotated[float, typer.Option(help="Relative capacity.", min=0.001, max=1000)] = 1.0,
        output: OutputOpt = None,
    ) -> None:
        """Add a replica to the fleet.

        Examples:

          pcache replicas add r5 http://gpu5:8000

          pcache replicas add r6 http://gpu6:8000 --group code --weight 2
        """
        cli = get_context(ctx)
        if not url.startswith(("http://", "https://")):
            fail(f"invalid URL {url!r}: must start with http:// or https://", ExitCode.USAGE)
        try:
            request = ReplicaIn(name=name, url=url, engine=engine, group=group_name, weight=weight)
        except ValidationError as exc:
            error = exc.errors()[0]
            fail(f"invalid replica {error['loc'][0]}: {error['msg']}", ExitCode.USAGE)
        with cli.admin(subject=f"replica {name}") as client:
            added = client.add_replica(request)
        info(f"replica {added.name} added ({added.url})")
        _emit(cli, [added], cli.output_for(output), single=True)
        warn_if_not_answering(added)
        fail_on_handover(f"adding {added.name}", added.handover)

    @group.command("remove")
    def remove(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Replica to remove.", autocompletion=complete_replica)],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        confirm: Annotated[
            str | None,
            typer.Option("--confirm", metavar="NAME", help="Required to remove the last routable replica."),
        ] = None,
        output: OutputOpt = None,
    ) -> None:
        """Remove a replica from the fleet (shows the blast radius first).

        Examples:

          pcache replicas remove r5

          pcache replicas remove r5 --yes
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        with cli.admin(subject=f"replica {name}") as client:
            radius = client.blast_radius(name)
            cli.err_console().print(render_blast_radius(radius))
            if radius.last_routable and confirm != name:
                fail(
                    f"{name} is the last routable replica; removing it stops all traffic. "
                    f"Re-run with --confirm {name} to do it anyway"
                )
            confirm_or_fail(cli, "remove", name, yes or confirm == name)
            result = client.remove_replica(name, force=radius.last_routable)
        info(f"replica {name} removed")
        emit_blast_radius(cli, result, fmt)
        fail_on_handover(f"removal of {name}", result.handover)
