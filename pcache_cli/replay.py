"""`pcache replay TRACE`: run routing policies over a recorded trace on a simulated fleet."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from pcache_cli.common import ExitCode, fail, info
from pcache_cli.context import get_context
from pcache_cli.output import OutputFormat, OutputOpt, emit

if TYPE_CHECKING:
    from rich.console import Console

    from pcache.replay import ReplayReport

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command(rich_help_panel="Run")(replay)


def replay(
    ctx: typer.Context,
    trace: Annotated[
        Path, typer.Argument(help="Mooncake-format JSONL trace (timestamp, lengths, hash_ids).")
    ],
    policy: Annotated[
        str, typer.Option("--policy", "-p", help="'all' or a comma-separated list of policy names.")
    ] = "all",
    replicas: Annotated[int, typer.Option("--replicas", "-n", min=1, help="Simulated replicas.")] = 8,
    scale_at: Annotated[
        str | None,
        typer.Option("--scale-at", help="Scale event, e.g. '50%:+1' (half-way, add one) or '6000:-1'."),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad trace line.")] = False,
    plot: Annotated[bool, typer.Option("--plot", help="Chart hit rate and TTFT p90 per minute.")] = False,
    prefill_tps: Annotated[
        float, typer.Option("--prefill-tps", min=1.0, help="Prefill speed, prompt tokens per second.")
    ] = 20_000.0,
    fixed_ms: Annotated[
        float, typer.Option("--fixed-ms", min=0.0, help="Fixed cost per request (ms).")
    ] = 20.0,
    decode_ms: Annotated[
        float, typer.Option("--decode-ms-per-token", min=0.0, help="Decode time per output token (ms).")
    ] = 20.0,
    cache_tokens: Annotated[
        int, typer.Option("--cache-tokens", min=1, help="KV cache capacity per replica (tokens).")
    ] = 450_000,
    block_tokens: Annotated[
        int, typer.Option("--block-tokens", min=1, help="Tokens per trace block (hash_id).")
    ] = 512,
    pool_ms: Annotated[
        float | None,
        typer.Option(
            "--pool-ms",
            min=0.0,
            help="Give the fleet a shared KV pool with this round trip (ms); adds tier-aware 'tiered+tiers'.",
        ),
    ] = None,
    pool_tokens: Annotated[
        int, typer.Option("--pool-tokens", min=1, help="Shared pool capacity (tokens), with --pool-ms.")
    ] = 4_000_000,
    pool_load_tps: Annotated[
        float, typer.Option("--pool-load-tps", min=1.0, help="Pool transfer speed, tokens per second.")
    ] = 200_000.0,
    precise: Annotated[
        bool,
        typer.Option(
            "--precise",
            help="Also run each cache-indexed policy (as NAME+precise) on a precise index: the "
            "replayed fleet's own caches, as the engines' KV events report them.",
        ),
    ] = False,
    output: OutputOpt = None,
) -> None:
    """Replay a trace through routing policies and compare hit rate, TTFT and load balance.

    Every policy runs the router's own code over its own simulated fleet (finite LRU block caches,
    a prefill queue per replica); the trace is streamed once.

    Examples:

      pcache replay trace.jsonl

      pcache replay trace.jsonl -p round_robin,tiered -n 8 --plot
    """
    from pcache.policy import POLICY_NAMES
    from pcache.replay import TIER_AWARE, ScaleEvent, ServiceModel, TraceError, run_replay

    cli = get_context(ctx)
    fmt = cli.output_for(output)
    valid = (*POLICY_NAMES, "tiered" + TIER_AWARE) if pool_ms is not None else POLICY_NAMES
    everything = [*POLICY_NAMES, "tiered" + TIER_AWARE] if pool_ms is not None else list(POLICY_NAMES)
    names = everything if policy.strip().lower() == "all" else _policy_names(policy, valid)
    scale = None
    if scale_at is not None:
        try:
            scale = ScaleEvent.parse(scale_at)
        except ValueError as exc:
            fail(str(exc), ExitCode.USAGE)
        if scale.delta < 0 and replicas + scale.delta < 1:
            fail(f"cannot scale {replicas} replicas by {scale.delta}", ExitCode.USAGE)
    if not trace.is_file():
        fail(f"trace {trace} not found (or not a file)", ExitCode.USAGE)
    model = ServiceModel(
        prefill_tokens_per_s=prefill_tps,
        fixed_s=fixed_ms / 1000.0,
        decode_s_per_token=decode_ms / 1000.0,
        cache_tokens=cache_tokens,
        block_tokens=block_tokens,
        pool_tokens=pool_tokens if pool_ms is not None else 0,
        pool_latency_s=(pool_ms or 0.0) / 1000.0,
        pool_tokens_per_s=pool_load_tps,
    )
    err = cli.err_console()
    try:
        with err.status(f"replaying {trace.name} through {len(names)} policies ...") as status:
            report = run_replay(
                trace,
                names,
                replicas,
                model=model,
                scale=scale,
                strict=strict,
                progress=lambda n: status.update(f"replaying {trace.name}: {n:,} requests ..."),
                precise=precise,
            )
    except TraceError as exc:
        fail(f"{trace}: {exc} (--strict)")
    except OSError as exc:
        fail(f"cannot read {trace}: {exc.strerror or exc}")

    if report.bad_lines:
        info(
            f"skipped {report.bad_lines} bad line(s); first at line {report.first_bad_line}: "
            f"{report.first_bad_problem}"
        )
    if report.requests == 0:  # before any table: a page of zeros marked "best" would mislead
        fail(
            f"{trace}: no usable requests; expected JSONL with one request per line "
            "(Mooncake: timestamp, input_length, output_length, hash_ids)"
        )
    if fmt.is_machine:
        emit(cli, fmt, document=report.to_dict(), items=_result_rows(report), render=lambda _wide: Text(""))
    else:
        console = cli.console()
        _print_table(console, report, wide=fmt is OutputFormat.WIDE)
        if plot:
            _plot(console, report)


def _policy_names(spec: str, valid: tuple[str, ...]) -> list[str]:
    names = [name.strip().lower().replace("-", "_") for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        bad = ", ".join(unknown) if unknown else "(none)"
        hint = " (tiered+tiers needs --pool-ms)" if any(name.endswith("+tiers") for name in unknown) else ""
        fail(f"unknown policy {bad}; valid policies: all, {', '.join(valid)}{hint}", ExitCode.USAGE)
    return list(dict.fromkeys(names))


def _result_rows(report: ReplayReport) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for result in report.to_dict()["results"]:
        result.pop("timeline", None)
        rows.append({"trace": report.trace, "replicas": report.replicas, "scale": report.scale, **result})
    return rows


def _fmt_s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _fmt_fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_table(console: Console, report: ReplayReport, *, wide: bool) -> None:
    from rich.table import Table

    scaled = report.scale is not None
    title = f"{Path(report.trace).name}: {report.requests:,} requests, {report.replicas} replicas"
    if scaled:
        title += f", scale {report.scale} at request {report.scale_at_request:,}"
    pooled = any(r.pool_hit_rate is not None for r in report.results)
    if pooled:
        title += ", shared KV pool"
    table = Table(title=title, title_justify="left")
    table.add_column("POLICY")
    columns = ("HIT RATE", "GPU HIT", "POOL HIT") if pooled else ("HIT RATE",)
    for column in (*columns, "TTFT P50", "TTFT P90", "TTFT P99", "IMBALANCE P90"):
        table.add_column(column, justify="right")
    if scaled:
        table.add_column("SESSIONS MOVED", justify="right")
        table.add_column("PREFIXES MOVED", justify="right")
    if wide:
        table.add_column("DRIFT", justify="left")
        table.add_column("REASONS", justify="left")
    best_hit = max((r.hit_rate for r in report.results), default=0.0)
    best_p90 = min((r.ttft_p90_s for r in report.results), default=math.nan)
    for result in report.results:
        hit = f"{result.hit_rate:.1%}" + (" *" if result.hit_rate == best_hit else "")
        p90 = _fmt_s(result.ttft_p90_s) + (" *" if result.ttft_p90_s == best_p90 else "")
        imbalance = "-" if math.isnan(result.imbalance_p90) else f"{result.imbalance_p90:.2f}"
        tiers: list[str] = []
        if pooled:
            pool = result.pool_hit_rate or 0.0
            tiers = [f"{result.hit_rate - pool:.1%}", f"{pool:.1%}"]
        row = [
            result.policy,
            hit,
            *tiers,
            _fmt_s(result.ttft_p50_s),
            p90,
            _fmt_s(result.ttft_p99_s),
            imbalance,
        ]
        if scaled:
            row += [_fmt_fraction(result.sessions_moved), _fmt_fraction(result.prefix_keys_moved)]
        if wide:
            row.append(" ".join(f"{k}={v}" for k, v in sorted(result.drift.items())) or "-")
            row.append(" ".join(f"{k}={v}" for k, v in sorted(result.reasons.items())))
        table.add_row(*row)
    console.print(table)
    console.print(
        "* best. Hit rate is token-weighted; imbalance is the busiest replica's average requests in "
        f"flight over the mean, per minute. Replayed in {report.elapsed_s:.1f} s.",
        style="dim",
    )


def _plot(console: Console, report: ReplayReport) -> None:
    """Hit rate and TTFT p90 per minute, one line per policy (plotext 6, through Rich)."""
    import plotext
    from rich.text import Text

    figure = plotext.figure
    for label, attribute, scale in (("hit rate (%)", "hit_rate", 100.0), ("TTFT p90 (s)", "ttft_p90_s", 1.0)):
        figure.clear()
        figure.plot_size(min(console.width, 120), 16)
        figure.title(f"{label} per minute")
        figure.label("minute", "x")
        for result in report.results:
            points = [p for p in result.timeline if not math.isnan(getattr(p, attribute))]
            if points:
                xs = [p.minute for p in points]
                ys = [getattr(p, attribute) * scale for p in points]
                figure.draw(figure.signal(xs, ys).lines().label(result.policy))
        console.print(Text.from_ansi(figure.build().string()))
