"""`pcache prewarm FILE`: warm replicas' prefix caches ahead of traffic, with progress and a result table.

The router plans (which prefix goes to which replicas and why) and runs the job; the CLI reads the
file, submits it, follows the job with a progress bar and prints what happened.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table
from rich.text import Text

from pcache.api import PrewarmIn, PrewarmJob, PrewarmPair
from pcache.client import SyncAdminClient
from pcache.operator.prefixes_file import PrefixFileError, read_prefixes
from pcache_cli.common import ExitCode, fail, info
from pcache_cli.context import CliContext, get_context
from pcache_cli.output import OutputFormat, OutputOpt, emit, seconds

__all__ = ["follow_job", "plan_table", "register", "report_job", "results_table", "split_names"]

POLL_INTERVAL = 0.2


def split_names(value: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; ``None`` or blank stays ``None``."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def plan_table(job: PrewarmJob) -> Table:
    """The router's plan: which prefix goes to which replicas, and why."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in ("PREFIX", "REPLICAS", "WHY"):
        table.add_column(header, no_wrap=header != "WHY")
    for entry in sorted(job.plan, key=lambda e: e.prefix):
        table.add_row(entry.prefix, ", ".join(entry.replicas), entry.why)
    return table


def _verified(pair: PrewarmPair) -> Text:
    if pair.verified is None:
        return Text("-", style="dim")
    return Text("cached", style="green") if pair.verified else Text("NOT CACHED", style="red")


def _result(pair: PrewarmPair) -> Text:
    if pair.ok is None:
        return Text("pending", style="yellow")
    return Text("ok", style="green") if pair.ok else Text("FAILED", style="red")


def results_table(job: PrewarmJob, verify: bool = False) -> Table:
    """One row per (prefix, replica) pair, sorted, with the outcome (and verification)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    pooled = any(p.verified_on for p in job.results)
    headers = ["PREFIX", "REPLICA", "RESULT", "CACHED TOKENS"]
    if verify:
        headers.append("VERIFIED")
    if pooled:
        headers += ["PROBED ON", "EXTERNAL HITS"]
    headers += ["TIME", "ERROR"]
    for header in headers:
        table.add_column(
            header, no_wrap=header != "ERROR", justify="right" if header == "CACHED TOKENS" else "left"
        )
    for pair in sorted(job.results, key=lambda p: (p.prefix, p.replica)):
        cells: list[Text | str] = [pair.prefix, pair.replica, _result(pair)]
        cells.append("-" if pair.cached_tokens is None else str(pair.cached_tokens))
        if verify:
            cells.append(_verified(pair))
        if pooled:
            cells.append(pair.verified_on or "-")
            cells.append("-" if pair.external_hit_tokens is None else str(pair.external_hit_tokens))
        cells += [seconds(pair.duration_s), Text(pair.error or "", style="red")]
        table.add_row(*cells)
    return table


def follow_job(cli: CliContext, client: SyncAdminClient, job: PrewarmJob, timeout: float) -> PrewarmJob:
    """Poll the job until it ends, with a progress bar (and ETA) on stderr; exit 4 on timeout."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("prewarm {task.fields[job]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=cli.err_console()) as progress:
        task = progress.add_task("prewarm", total=max(job.total, 1), job=job.id, failed=0)
        while True:
            # ``done`` counts every finished pair, failed ones included (``failed`` is a subset).
            progress.update(task, completed=job.done, failed=job.failed)
            if job.state in ("done", "failed"):
                return job
            if time.monotonic() >= deadline:
                progress.stop()
                fail(
                    f"timed out after {timeout:g}s waiting for prewarm job {job.id} "
                    f"({job.done}/{job.total} pairs finished); it keeps running on the router",
                    ExitCode.TIMEOUT,
                )
            time.sleep(POLL_INTERVAL)
            job = client.prewarm_job(job.id)


def report_job(cli: CliContext, job: PrewarmJob, fmt: OutputFormat | None, verify: bool) -> None:
    """Print the result (table or JSON; nothing on stdout when ``fmt`` is None), then exit 5 listing
    the failed pairs when some failed."""
    if fmt is not None:
        emit(
            cli,
            fmt,
            document=job,
            items=sorted(job.results, key=lambda p: (p.prefix, p.replica)),
            render=lambda wide: results_table(job, verify=verify or wide),
        )
    failed = sorted((p for p in job.results if p.ok is False), key=lambda p: (p.prefix, p.replica))
    uncached = sorted(
        (p for p in job.results if p.ok and p.verified is False), key=lambda p: (p.prefix, p.replica)
    )
    ok = sum(1 for p in job.results if p.ok)
    summary = f"prewarm {job.id}: {ok}/{job.total} pairs ok, {len(failed)} failed"
    if verify:
        verified = sum(1 for p in job.results if p.verified)
        summary += f", {verified}/{job.total} verified cached"
    info(summary)
    if job.state == "failed" and not failed and job.done < job.total:
        fail(f"prewarm job {job.id} failed before finishing ({job.done}/{job.total} pairs done)")
    if failed and ok == 0 and not uncached:
        fail("every pair failed: " + _pairs(failed))
    if failed or uncached:
        problems = [f"{p.prefix} on {p.replica} ({p.error or 'failed'})" for p in failed]
        problems += [f"{p.prefix} on {p.replica} (not cached on verify)" for p in uncached]
        fail(f"{len(problems)} pair(s) did not warm: " + "; ".join(problems), ExitCode.PARTIAL)


def _pairs(pairs: list[PrewarmPair]) -> str:
    return "; ".join(f"{p.prefix} on {p.replica} ({p.error or 'failed'})" for p in pairs)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Actions")
    def prewarm(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="Prefixes: text (one per line), JSONL or YAML.")],
        copies: Annotated[
            int | None, typer.Option(help="Replicas per prefix (default: the router's plan).", min=1)
        ] = None,
        replicas: Annotated[
            str | None, typer.Option(help="Comma-separated replicas to warm (default: the plan's).")
        ] = None,
        as_: Annotated[
            Literal["chat", "completion"],
            typer.Option("--as", help="Render each prefix as a chat or a completion prompt."),
        ] = "chat",
        pin: Annotated[
            bool, typer.Option("--pin", help="Also pin each prefix to the replicas warmed.")
        ] = False,
        verify: Annotated[
            bool, typer.Option("--verify", help="Probe each pair again and report whether it hit the cache.")
        ] = False,
        concurrency: Annotated[
            int, typer.Option(help="Prewarm requests in flight at once.", min=1, max=256)
        ] = 8,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
        tier: Annotated[
            Literal["gpu", "pool"],
            typer.Option(
                "--tier",
                help="gpu: warm each prefix on its replicas. pool: once, into the KV pool the replicas "
                "share (with --verify, probed on another replica and checked in its external-hit counters).",
            ),
        ] = "gpu",
        timeout: Annotated[
            float, typer.Option(help="Seconds to wait for the job (exit 4 after).", min=0)
        ] = 600.0,
        output: OutputOpt = None,
    ) -> None:
        """Warm the prefix caches of the right replicas ahead of traffic.

        Examples:

          pcache prewarm prompts.txt --dry-run

          pcache prewarm prompts.txt --copies 2 --verify --timeout 120
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        try:
            prefixes = read_prefixes(file)
        except PrefixFileError as exc:
            fail(str(exc))
        request = PrewarmIn(
            prefixes=prefixes,
            **{"as": as_},
            copies=copies,
            replicas=split_names(replicas),
            pin=pin,
            verify=verify,
            concurrency=concurrency,
            dry_run=dry_run,
            tier=tier,
        )
        with cli.admin() as client:
            job = client.prewarm(request)
            if dry_run:
                emit(
                    cli,
                    fmt,
                    document=job,
                    items=sorted(job.plan, key=lambda e: e.prefix),
                    render=lambda _wide: plan_table(job),
                )
                info(f"plan: {len(prefixes)} prefixes, {job.total} (prefix, replica) pairs; nothing sent")
                return
            job = follow_job(cli, client, job, timeout)
        report_job(cli, job, fmt, verify)
