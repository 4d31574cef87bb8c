"""`pcache loadgen`: multi-turn chat traffic against the router or any OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pcache_cli.common import ExitCode, fail, info
from pcache_cli.context import get_context
from pcache_cli.output import OutputFormat, percent, print_json, seconds

if TYPE_CHECKING:
    from rich.table import Table

    from pcache.loadgen import LoadSummary
    from pcache.workload import SystemPrompt

__all__ = ["loadgen", "parse_range", "read_prompts", "register", "summary_table"]


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command(rich_help_panel="Run")(loadgen)


def parse_range(text: str, what: str) -> tuple[int, int]:
    """``"4-12"`` -> ``(4, 12)``; ``"6"`` -> ``(6, 6)``."""
    low, _, high = text.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        fail(f"{what} must be N or LOW-HIGH, got {text!r}", ExitCode.USAGE)
    if not 1 <= bounds[0] <= bounds[1]:
        fail(f"{what} must satisfy 1 <= LOW <= HIGH, got {text!r}", ExitCode.USAGE)
    return bounds


def read_prompts(directory: Path) -> tuple[SystemPrompt, ...]:
    """System prompts from ``*.txt`` files (name = file stem), most popular first by sorted name."""
    from pcache.workload import SystemPrompt

    if not directory.is_dir():
        fail(f"--prompts {directory} is not a directory", ExitCode.USAGE)
    prompts = tuple(
        SystemPrompt(path.stem, path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.txt"))
    )
    if not prompts or not all(prompt.text for prompt in prompts):
        fail(f"--prompts {directory} has no non-empty *.txt files", ExitCode.USAGE)
    return prompts


def summary_table(summary: LoadSummary, title: str = "loadgen") -> Table:
    """The end-of-run summary as a two-column table."""
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    errors = ", ".join(f"{kind} {count}" for kind, count in summary.errors.items()) or "none"
    table.add_row("requests", f"{summary.requests} ({summary.ok} ok)")
    table.add_row("errors", errors)
    if summary.cut_off:
        table.add_row("cut off at the end", f"{summary.cut_off} (in flight when the run ended)")
    table.add_row("sessions", str(summary.sessions))
    table.add_row("req/s", f"{summary.requests_per_s:.1f}")
    table.add_row("TTFT p50 / p95", seconds(summary.ttft_p50_s) + " / " + seconds(summary.ttft_p95_s))
    table.add_row(
        "latency p50 / p95", seconds(summary.latency_p50_s) + " / " + seconds(summary.latency_p95_s)
    )
    table.add_row("cached-token ratio", percent(summary.cached_ratio, 1))
    if summary.by_replica:
        table.add_row("by replica", " ".join(f"{n}:{c}" for n, c in summary.by_replica.items()))
    return table


def loadgen(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--router",
            "--url",
            help="OpenAI-compatible base URL: the router's data plane or any server.",
        ),
    ] = "http://127.0.0.1:8080",
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", help="Stop after this many requests.", min=1)
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", "-d", help="Stop starting requests after S seconds.")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of every random draw (same seed, same traffic).")
    ] = 0,
    session_rate: Annotated[
        float, typer.Option("--session-rate", help="New sessions per second (Poisson arrivals).")
    ] = 2.4,
    turns: Annotated[str, typer.Option("--turns", help="Turns per session: N or LOW-HIGH.")] = "10-18",
    think_time: Annotated[
        float, typer.Option("--think-time", help="Mean think time between turns (s, exponential).")
    ] = 1.0,
    user_chars: Annotated[
        str, typer.Option("--user-chars", help="Characters per user message: N or LOW-HIGH.")
    ] = "2000-6000",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="max_tokens of every request.", min=1)] = 64,
    zipf: Annotated[float, typer.Option("--zipf", help="Zipf exponent of system-prompt popularity.")] = 1.0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Most sessions in flight at once.", min=1)
    ] = 256,
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help="Directory of *.txt system prompts (default: the built-in six)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model name (default: first of /v1/models).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="OPENAI_API_KEY", help="Bearer key for the endpoint.")
    ] = None,
    output: Annotated[OutputFormat | None, typer.Option("--output", "-o", help="table or json.")] = None,
) -> None:
    """Send multi-turn chat sessions over shared system prompts; print a summary at the end.

    Examples:

      pcache loadgen --router http://127.0.0.1:8080 -n 200

      pcache loadgen --url http://127.0.0.1:8080 -d 60 --concurrency 8 -o json
    """
    import asyncio

    from pcache.loadgen import LoadGenerator, LoadLimits
    from pcache.workload import Workload, default_prompts

    cli = get_context(ctx)
    if requests is None and duration is None:
        fail("give --requests, --duration or both, so the run ends", ExitCode.USAGE)
    if duration is not None and duration <= 0:
        fail("--duration must be > 0", ExitCode.USAGE)
    try:
        workload = Workload(
            prompts=read_prompts(prompts) if prompts else default_prompts(),
            session_rate=session_rate,
            turns=parse_range(turns, "--turns"),
            think_time_s=think_time,
            user_chars=parse_range(user_chars, "--user-chars"),
            max_tokens=max_tokens,
            zipf_s=zipf,
            seed=seed,
        )
    except ValueError as exc:
        fail(str(exc), ExitCode.USAGE)
    limits = LoadLimits(max_requests=requests, duration_s=duration, max_sessions=concurrency)
    generator = LoadGenerator(url, workload, limits, model=model, api_key=api_key)

    async def run() -> LoadSummary:
        import signal

        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C: summary, then exit
        try:
            return await generator.run(stop)
        finally:
            await generator.aclose()

    info(f"loadgen: {url}, seed {seed}, {len(workload.prompts)} system prompts")
    try:
        summary = asyncio.run(run())
    except RuntimeError as exc:
        fail(str(exc), ExitCode.UNREACHABLE)
    if cli.output_for(output).is_machine:
        print_json(summary.to_dict())
    else:
        cli.console().print(summary_table(summary))
    if summary.ok == 0:
        raise typer.Exit(int(ExitCode.FAILED))
    if summary.errors:
        raise typer.Exit(int(ExitCode.PARTIAL))
