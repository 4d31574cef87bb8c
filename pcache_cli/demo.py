"""`pcache demo`: a simulated fleet, the router and live traffic in one command (and `--compare`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from pcache_cli.common import ExitCode, fail, info
from pcache_cli.context import CliContext, get_context
from pcache_cli.output import OutputFormat, percent, print_json, print_jsonl, seconds

if TYPE_CHECKING:
    import asyncio

    from rich.table import Table

    from pcache.api import StatusSnapshot
    from pcache.demo import DemoResult, DemoRun

__all__ = ["compare_table", "demo", "register", "result_table"]


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command(rich_help_panel="Run")(demo)


def _ratio(tiered: float | None, baseline: float | None) -> str:
    if tiered is None or baseline is None or baseline == 0:
        return "-"
    return f"{tiered / baseline:.2f}x"


def compare_table(results: list[DemoResult]) -> Table:
    """Policies side by side, from the replicas' own counters, with the last/first ratio."""
    from rich.table import Table

    table = Table(header_style="bold", caption="replicas' own counters", caption_justify="left")
    table.add_column("")
    for result in results:
        table.add_column(result.policy, justify="right")
    table.add_column("ratio", justify="right")
    first, last = results[0], results[-1]
    rows: list[tuple[str, Any, str]] = [
        ("fleet hit rate", lambda r: percent(r.counters.hit_rate, 1), "hit_rate"),
        ("TTFT p50", lambda r: seconds(r.counters.ttft_p50_s), "ttft_p50_s"),
        ("TTFT p95", lambda r: seconds(r.counters.ttft_p95_s), "ttft_p95_s"),
        ("load imbalance (max/mean)", lambda r: f"{r.counters.imbalance or 0:.2f}", "imbalance"),
    ]
    for label, cell, key in rows:
        ratio = _ratio(getattr(last.counters, key), getattr(first.counters, key))
        table.add_row(label, *(cell(r) for r in results), ratio)
    table.add_section()
    table.add_row("requests (replicas)", *(str(sum(r.counters.requests.values())) for r in results), "")
    table.add_row("client errors", *(str(sum(r.load.errors.values())) for r in results), "")
    if any(r.load.cut_off for r in results):
        table.add_row("cut off at the end", *(str(r.load.cut_off) for r in results), "")
    table.add_row("client cached-token ratio", *(percent(r.load.cached_ratio, 1) for r in results), "")
    return table


def result_table(result: DemoResult) -> Table:
    """The end-of-demo summary: fleet counters first, then the client's view."""
    from rich.table import Table

    counters, load = result.counters, result.load
    table = Table(title=f"pcache demo ({result.policy})", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("fleet hit rate", percent(counters.hit_rate, 1))
    table.add_row("TTFT p50 / p95", seconds(counters.ttft_p50_s) + " / " + seconds(counters.ttft_p95_s))
    table.add_row("load imbalance (max/mean)", f"{counters.imbalance or 0:.2f}")
    table.add_row("requests by replica", " ".join(f"{n}:{c}" for n, c in counters.requests.items()))
    errors = ", ".join(f"{kind} {count}" for kind, count in load.errors.items()) or "none"
    table.add_row("client requests", f"{load.requests} ({load.ok} ok, {load.requests_per_s:.1f}/s)")
    table.add_row("client errors", errors)
    if load.cut_off:
        table.add_row("cut off at the end", str(load.cut_off))
    table.add_row("client cached-token ratio", percent(load.cached_ratio, 1))
    moves = ", ".join(f"{cause} {count}" for cause, count in sorted(result.drift_moves.items())) or "none"
    table.add_row("session-home moves", moves)
    return table


def _install_stop(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM end the demo cleanly (the summary still prints)."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _announce(cli: CliContext, run: DemoRun) -> None:
    sim, router = run.sim, run.router
    info(f"simulator pid {sim.pid if sim else '-'}:")
    for name, url in run.replica_urls.items():
        spare = "  (spare: joins later)" if name == run.fleet.spare else ""
        info(f"  replica {name} {url}{spare}")
    info(
        f"router pid {router.pid if router else '-'}: data plane {run.router_url}, admin API {run.admin_url}"
    )
    info(f"  try: pcache --router {run.admin_url} status")


async def _run_console(run: DemoRun, stop: asyncio.Event) -> DemoResult:
    """`pcache top` against the demo's router while the demo runs."""
    import asyncio
    import contextlib

    from pcache_console.launch import build_app

    app = build_app(admin_url=run.admin_url, token=run.token, refresh_s=1.0)
    printed = run.on_event

    def flash(text: str) -> None:
        from textual.css.query import NoMatches

        with contextlib.suppress(NoMatches):  # before the screen is mounted: printed afterwards anyway
            app.flash(text.strip())

    run.on_event = flash  # scenario events go to the console's flash line, not over the screen
    demo_task = asyncio.create_task(run.run(stop))
    app_task = asyncio.create_task(app.run_async())

    async def hint() -> None:
        while not app.is_running and not app_task.done():
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        flash("pcache demo: traffic and scenario running; q quits and stops everything")

    hinting = asyncio.create_task(hint())
    await asyncio.wait({demo_task, app_task}, return_when=asyncio.FIRST_COMPLETED)
    if app_task.done():
        stop.set()
    else:
        app.exit()
    await app_task
    hinting.cancel()
    try:
        return await demo_task
    finally:
        run.on_event = printed
        for event in run.events:
            printed(event)


async def _run_plain(cli: CliContext, run: DemoRun, stop: asyncio.Event, every_s: float) -> DemoResult:
    import sys

    from rich.console import Console

    from pcache_cli.status import render_status

    # Status tables go to stderr (stdout carries the final summary); never squeezed in a pipe.
    console = Console(
        file=sys.stderr, no_color=not cli.color, highlight=False, width=None if sys.stderr.isatty() else 200
    )

    def show(snapshot: StatusSnapshot) -> None:
        console.print(render_status(snapshot))
        console.print()

    return await run.run(stop, on_status=show, status_every_s=every_s)


def demo(
    ctx: typer.Context,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            "-d",
            help="Seconds of traffic (default: until quit in the console, 60 with --no-tui).",
        ),
    ] = None,
    no_tui: Annotated[
        bool, typer.Option("--no-tui", help="Print a status table every few seconds instead.")
    ] = False,
    compare: Annotated[
        bool, typer.Option("--compare", help="Run round_robin then tiered on the same traffic; compare.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the traffic (same seed, same sessions).")] = 0,
    pool: Annotated[
        bool,
        typer.Option(
            "--pool",
            help="Give the fleet a KV pool the replicas share (10 ms round trip) and a tiered that knows it.",
        ),
    ] = False,
    policy: Annotated[str, typer.Option("--policy", help="Routing policy of the demo router.")] = "tiered",
    warmup: Annotated[
        float, typer.Option("--warmup", help="--compare: seconds of traffic before measuring.", min=0)
    ] = 15.0,
    every: Annotated[float, typer.Option("--every", help="Seconds between status tables (--no-tui).")] = 5.0,
    port: Annotated[int, typer.Option("--port", help="Router data-plane port (0: a free port).")] = 0,
    admin_port: Annotated[
        int, typer.Option("--admin-port", help="Router admin API port (0: a free port).")
    ] = 0,
    output: Annotated[OutputFormat | None, typer.Option("--output", "-o", help="table or json.")] = None,
) -> None:
    """Start a simulated fleet, the router and live traffic; watch cache-aware routing work.

    Examples:

      pcache demo

      pcache demo --no-tui -d 30 --compare
    """
    import asyncio
    import sys

    from pcache.demo import ChildCrashed, DemoError, DemoFleet, DemoRun, demo_workload, run_compare

    cli = get_context(ctx)
    fmt = cli.output_for(output)
    if duration is not None and duration <= 0:
        fail("--duration must be > 0", ExitCode.USAGE)
    if not (0 <= port <= 65535 and 0 <= admin_port <= 65535):
        fail("ports must be between 0 and 65535", ExitCode.USAGE)
    if every <= 0:
        fail("--every must be > 0", ExitCode.USAGE)
    workload = demo_workload(seed)
    fleet = DemoFleet(pool_blocks=65536) if pool else DemoFleet()

    if compare:

        async def compare_main() -> list[DemoResult]:
            stop = asyncio.Event()
            _install_stop(stop)
            return await run_compare(
                duration_s=duration or 30.0,
                warmup_s=warmup,
                fleet=fleet,
                workload=workload,
                stop=stop,
                on_event=info,
            )

        try:
            results = asyncio.run(compare_main())
        except DemoError as exc:
            fail(str(exc))
        if not results:
            fail("interrupted before any run finished", ExitCode.PARTIAL)
        if fmt is OutputFormat.JSONL:
            print_jsonl(result.to_dict() for result in results)  # one compact line per policy
        elif fmt.is_machine:
            print_json({result.policy: result.to_dict() for result in results})
        else:
            cli.console().print(compare_table(results))
        return

    use_console = not no_tui and sys.stdin.isatty() and sys.stdout.isatty()
    seconds_of_traffic = duration if duration is not None or use_console else 60.0

    async def main() -> DemoResult:
        stop = asyncio.Event()
        _install_stop(stop)
        run = DemoRun(
            fleet=fleet,
            workload=workload,
            policy=policy,
            duration_s=seconds_of_traffic,
            listen=f"127.0.0.1:{port}",
            admin_listen=f"127.0.0.1:{admin_port}",
            on_event=info,
        )
        async with run:
            _announce(cli, run)
            if use_console:
                return await _run_console(run, stop)
            return await _run_plain(cli, run, stop, every)

    try:
        result = asyncio.run(main())
    except ChildCrashed as exc:
        fail(f"{exc}; stopped the rest of the demo")
    except DemoError as exc:
        fail(str(exc))
    if fmt is OutputFormat.JSONL:
        print_jsonl([result.to_dict()])
    elif fmt.is_machine:
        print_json(result.to_dict())
    else:
        cli.console().print(result_table(result))
