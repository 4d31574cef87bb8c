"""`pcache drain` and `pcache undrain` (kubectl's cordon/drain/uncordon, with the blast radius first)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pcache.api import BlastRadius, HandoverPrewarm, ReplicaStatus
from pcache.client import SyncAdminClient
from pcache.drain_capacity import DrainCapacity, drain_capacity
from pcache_cli.common import ExitCode, fail, info
from pcache_cli.completion import complete_replica
from pcache_cli.context import CliContext, get_context
from pcache_cli.output import OutputFormat, OutputOpt, emit, state_text

__all__ = [
    "confirm_or_fail",
    "emit_blast_radius",
    "fail_on_handover",
    "handover_problems",
    "register",
    "render_blast_radius",
    "wait_drained",
]

ReplicaArg = Annotated[str, typer.Argument(help="Replica name.", autocompletion=complete_replica)]


def render_blast_radius(radius: BlastRadius, capacity: DrainCapacity | None = None) -> RenderableType:
    """What draining the replica affects: in-flight requests, sessions, Tier-1 prefixes and successors,
    then (with ``capacity``) whether the replicas that take its work have room."""
    head = Text.assemble(
        ("replica ", "dim"),
        (radius.replica, "bold"),
        ("  state ", "dim"),
        state_text(radius.state),
        ("  in flight ", "dim"),
        str(radius.in_flight),
        ("  sessions homed ", "dim"),
        str(radius.sessions),
        ("  tier-1 prefixes ", "dim"),
        str(len(radius.tier1)),
    )
    parts: list[RenderableType] = [head]
    if radius.tier1:
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("TIER-1 PREFIX", no_wrap=True)
        table.add_column("SUCCESSORS", no_wrap=True)
        for move in sorted(radius.tier1, key=lambda m: m.prefix):
            table.add_row(move.prefix, ", ".join(move.successors) or "-")
        parts.append(table)
    if radius.last_routable:
        parts.append(
            Text.assemble(
                ("! ", "bold red"), "last routable replica: draining it leaves no replica for traffic"
            )
        )
    if capacity is not None:
        parts.append(Text(capacity.summary(), style="dim"))
        parts.extend(Text.assemble(("! ", "bold yellow"), warning) for warning in capacity.warnings)
    if radius.handover is not None:
        handover = radius.handover
        style = "green" if handover.complete else "bold red"
        parts.append(
            Text.assemble(
                ("prewarm job ", "dim"),
                handover.job,
                (" warmed the successors: ", "dim"),
                (f"{handover.ok}/{handover.total} pairs ok", style),
            )
        )
        for problem in handover_problems(handover):
            parts.append(Text.assemble(("  ✗ ", "bold red"), problem))
    elif radius.prewarm_job:
        parts.append(
            Text.assemble(("prewarm job ", "dim"), radius.prewarm_job, (" warms the successors", "dim"))
        )
    return Group(*parts)


def handover_problems(handover: HandoverPrewarm) -> list[str]:
    """One line per pair of a handover prewarm that did not warm (failed, or still unfinished)."""
    lines = [
        f"{pair.prefix} on {pair.replica}: {pair.error or 'failed'}"
        for pair in sorted(handover.failed, key=lambda p: (p.prefix, p.replica))
    ]
    if handover.unfinished:
        lines.append(f"{handover.unfinished} pair(s) still warming when the action stopped waiting")
    return lines


def fail_on_handover(what: str, handover: HandoverPrewarm | None) -> None:
    """Exit 5 (partial) naming every pair of ``what``'s handover prewarm that did not warm."""
    if handover is None or handover.complete:
        return
    problems = handover_problems(handover)
    fail(
        f"{what} done, but its handover prewarm {handover.job} did not warm "
        f"{handover.total - handover.ok}/{handover.total} pair(s) (served cold): " + "; ".join(problems),
        ExitCode.PARTIAL,
    )


def emit_blast_radius(
    cli: CliContext, radius: BlastRadius, fmt: OutputFormat, capacity: DrainCapacity | None = None
) -> None:
    emit(
        cli, fmt, document=radius, items=[radius], render=lambda _wide: render_blast_radius(radius, capacity)
    )


def confirm_or_fail(cli: CliContext, verb: str, name: str, yes: bool) -> None:
    """Return when the operator agreed to ``verb`` (drain, remove) ``name``; never prompts without a TTY."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(
            f"refusing to {verb} {name} without confirmation: stdin is not a TTY; pass --yes", ExitCode.USAGE
        )
    from rich.prompt import Confirm

    if not Confirm.ask(f"{verb.capitalize()} {name}?", default=False, console=cli.err_console()):
        fail(f"{verb} cancelled")


def _find(client: SyncAdminClient, name: str) -> ReplicaStatus | None:
    return next((replica for replica in client.replicas() if replica.name == name), None)


def wait_drained(
    cli: CliContext, client: SyncAdminClient, name: str, timeout: float, interval: float = 0.2
) -> ReplicaStatus:
    """Poll until the replica is ``drained``, with a progress bar of its in-flight requests."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    replica = _find(client, name)
    start = max(replica.in_flight if replica else 0, 1)
    columns = (
        SpinnerColumn(),
        TextColumn("draining {task.fields[replica]}: {task.fields[in_flight]} in flight"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=cli.err_console(), transient=True) as progress:
        task = progress.add_task("drain", total=start, replica=name, in_flight="?")
        while True:
            replica = _find(client, name)
            if replica is None:
                fail(f"replica {name} disappeared while draining")
            progress.update(
                task, completed=start - min(replica.in_flight, start), in_flight=replica.in_flight
            )
            if replica.state == "drained":
                return replica
            if replica.state not in ("draining", "drained"):
                fail(f"replica {name} is {replica.state}, no longer draining")
            if time.monotonic() >= deadline:
                fail(
                    f"timed out after {timeout:g}s waiting for {name} to drain "
                    f"({replica.in_flight} still in flight); it stays draining",
                    ExitCode.TIMEOUT,
                )
            time.sleep(interval)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Actions")
    def drain(
        ctx: typer.Context,
        replica: ReplicaArg,
        wait: Annotated[bool, typer.Option("--wait", help="Wait until the replica is drained.")] = False,
        timeout: Annotated[
            float, typer.Option(help="Seconds --wait may take (exit 4 after).", min=0)
        ] = 300.0,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the blast radius.")] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        confirm: Annotated[
            str | None,
            typer.Option("--confirm", metavar="NAME", help="Required to drain the last routable replica."),
        ] = None,
        output: OutputOpt = None,
    ) -> None:
        """Stop new sessions on REPLICA, move its homes and Tier-1 prefixes, let in-flight work finish.

        The blast radius and whether the rest of its group has room are shown first; --dry-run
        only shows them (a read: no token needed).

        Examples:

          pcache drain r3 --dry-run

          pcache drain r3 --yes --wait --timeout 120

          pcache drain r3 --token "$TOKEN" --router http://10.0.0.5:8081 -y
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        with cli.admin(subject=f"replica {replica}") as client:
            radius = client.blast_radius(replica)
            capacity = None if fmt.is_machine else drain_capacity(client.status(), replica)
            if dry_run:
                emit_blast_radius(cli, radius, fmt, capacity)
                return
            cli.err_console().print(render_blast_radius(radius, capacity))
            force = radius.last_routable
            if force and confirm != replica:
                fail(
                    f"{replica} is the last routable replica; draining it stops all traffic. "
                    f"Re-run with --confirm {replica} to do it anyway"
                )
            if confirm is not None and confirm != replica:
                fail(
                    f"--confirm {confirm} does not name the replica being drained ({replica})", ExitCode.USAGE
                )
            confirm_or_fail(cli, "drain", replica, yes or confirm == replica)
            result = client.drain(replica, force=force)
            info(f"replica {replica} draining")
            if wait:
                wait_drained(cli, client, replica, timeout)
                info(f"replica {replica} drained")
                result = result.model_copy(update={"state": "drained", "in_flight": 0})
        emit_blast_radius(cli, result, fmt)
        fail_on_handover(f"drain of {replica}", result.handover)

    @app.command(rich_help_panel="Actions")
    def undrain(ctx: typer.Context, replica: ReplicaArg, output: OutputOpt = None) -> None:
        """Return a draining or drained REPLICA to service.

        Examples:

          pcache undrain r3

          pcache undrain r3 -o json
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        with cli.admin(subject=f"replica {replica}") as client:
            status = client.undrain(replica)
        emit(
            cli,
            fmt,
            document=status,
            items=[status],
            render=lambda _wide: Text.assemble(
                "replica ", (status.name, "bold"), " ", state_text(status.state)
            ),
        )
