"""`pcache status`: the fleet at a glance, from the router or straight from the replicas.

:func:`render_status` turns a :class:`~pcache.api.StatusSnapshot` into a rich renderable (header,
one row per replica plus ALL, imbalance call-outs); the console reuses it when it has no TTY.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pcache.api import ReplicaStatus, StatusSnapshot
from pcache_cli.common import ExitCode, fail
from pcache_cli.context import CliContext, get_context
from pcache_cli.output import (
    OutputFormat,
    OutputOpt,
    bar,
    dash,
    emit,
    percent,
    seconds,
    state_text,
)

__all__ = ["direct_source", "load_replica_list", "register", "render_status", "router_source", "status_table"]


def _ttft(row: ReplicaStatus, q: float) -> float | None:
    """The row's TTFT quantile, computed from its cumulative buckets when the snapshot lacks it."""
    value = row.ttft_p50 if q == 0.5 else row.ttft_p95
    if value is not None or not row.ttft_buckets:
        return value
    from pcache.engines.histogram import quantile

    return quantile(list(row.ttft_buckets), q)


def _fleet_ttft(snapshot: StatusSnapshot, q: float) -> float | None:
    """Fleet TTFT quantile from the replicas' merged buckets (never an average of percentiles)."""
    value = _ttft(snapshot.all, q)
    if value is not None:
        return value
    buckets = [row.ttft_buckets for row in snapshot.replicas if row.ttft_buckets]
    if not buckets:
        return None
    from pcache.engines.histogram import merge_buckets, quantile

    return quantile(list(merge_buckets(buckets)), q)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _tier1(row: ReplicaStatus, wide: bool) -> Text:
    if not row.tier1_owned and not row.tier1_pinned:
        return dash()
    if wide:
        names = sorted(set(row.tier1_owned) | set(row.tier1_pinned))
        return Text(", ".join(f"{n}*" if n in row.tier1_pinned else n for n in names))
    counts = [(len(row.tier1_owned), "own"), (len(row.tier1_pinned), "pin")]
    return Text(" / ".join(f"{n} {what}" for n, what in counts if n))  # no "0 pin" on every row


ERROR_RATE_WARN = 0.05  # the router's error call-out threshold: red from here


def _error_rate(row: ReplicaStatus) -> Text:
    if row.error_rate is None:
        return dash()
    style = "bold red" if row.error_rate >= ERROR_RATE_WARN else ("yellow" if row.error_rate else "")
    return Text(f"{row.error_rate * 100:.1f}%", style=style)


def _last_error(row: ReplicaStatus) -> Text:
    """The replica's current error, dated (it clears when the replica answers well again)."""
    if not row.last_error:
        return dash()
    when = ""
    if row.last_error_at is not None:
        when = datetime.fromtimestamp(row.last_error_at, UTC).strftime("%H:%M:%SZ ")
    return Text(when + row.last_error, style="red")


def _errors_by_kind(row: ReplicaStatus) -> str:
    errors = row.errors
    return f"{errors.router_5xx}/{errors.upstream}/{errors.mid_stream}/{errors.retries}"


def _prefix_kv(row: ReplicaStatus) -> str:
    """KV held by cached prefixes (precise index): GPU tokens and their share of the capacity, and
    tokens on other media; ``-`` without KV events."""
    held = row.cached_prefix_tokens
    if not held:
        return "-"
    text = f"{held.get('GPU', 0)}"
    if row.cached_prefix_share is not None:
        text += f" ({row.cached_prefix_share:.0%})"
    others = " ".join(f"{medium}:{tokens}" for medium, tokens in sorted(held.items()) if medium != "GPU")
    return f"{text} {others}" if others else text


def _prediction(row: ReplicaStatus) -> str:
    """Share of requests whose predicted cached tokens equalled the engine's, and how many."""
    if row.prediction_exact_ratio is None:
        return "-"
    return f"{row.prediction_exact_ratio:.0%} of {row.predictions}"


def _row_cells(row: ReplicaStatus, wide: bool, p50: float | None, p95: float | None) -> list[Any]:
    ttft = Text.assemble(seconds(p50), " / ", seconds(p95))
    cells: list[Any] = [
        Text(row.name, style="bold" if row.name == "ALL" else ""),
        state_text(row.state, row.stale) if row.name != "ALL" else Text(""),
        row.engine,
        bar(row.kv_usage),
        f"{_count(row.running)}/{_count(row.waiting)}",
        percent(row.hit_rate, 1),
        ttft,
        _error_rate(row),
        str(row.sessions),
        _tier1(row, wide),
        f"{row.requests_per_s:.1f}",
    ]
    if wide:
        cells += [
            _errors_by_kind(row),
            str(row.in_flight),
            str(row.requests_total),
            row.group or "-",
            f"{row.weight:g}",
            "-" if row.scrape_age_s is None else f"{row.scrape_age_s:.1f}s",
            "-" if row.chars_per_token is None else f"{row.chars_per_token:.2f}",
            _count(row.block_size),
            _count(row.kv_capacity_tokens),
            row.cache_index if row.name != "ALL" else "-",
            _prefix_kv(row),
            _prediction(row),
            row.url or "-",
            _last_error(row),
        ]
    return cells


def status_table(snapshot: StatusSnapshot, wide: bool = False) -> Table:
    """One row per replica (sorted by name) plus the ALL row."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    headers = ["NAME", "STATE", "ENGINE", "KV", "RUN/WAIT", "HIT", "TTFT p50/p95", "ERR", "SESSIONS"]
    headers += ["TIER1", "REQ/S"]
    if wide:
        headers += [
            "5XX/UP/MID/RETRY",
            "IN-FLIGHT",
            "REQUESTS",
            "GROUP",
            "WEIGHT",
            "SCRAPED",
            "CHARS/TOK",
            "BLOCK",
            "KV TOKENS",
            "INDEX",
            "PREFIX KV",
            "PRED EXACT",
            "URL",
            "LAST ERROR",
        ]
    # On a narrow terminal rich shrinks columns; the replica's name and state must stay readable.
    keep = {
        "NAME": max([len("ALL"), *(len(r.name) for r in snapshot.replicas)]),
        "STATE": max((len(state_text(r.state, r.stale)) for r in snapshot.replicas), default=5),
        **{name: len(name) for name in ("CHARS/TOK", "BLOCK", "KV TOKENS")},
    }
    for header in headers:
        table.add_column(
            header,
            no_wrap=True,
            justify="right" if header in _NUMERIC else "left",
            min_width=keep.get(header),
        )
    for row in sorted(snapshot.replicas, key=lambda r: r.name):
        table.add_row(*_row_cells(row, wide, _ttft(row, 0.5), _ttft(row, 0.95)))
    table.add_section()
    all_row = snapshot.all.model_copy(update={"name": "ALL"})
    table.add_row(*_row_cells(all_row, wide, _fleet_ttft(snapshot, 0.5), _fleet_ttft(snapshot, 0.95)))
    return table


_NUMERIC = {
    "RUN/WAIT",
    "HIT",
    "ERR",
    "5XX/UP/MID/RETRY",
    "SESSIONS",
    "REQ/S",
    "IN-FLIGHT",
    "REQUESTS",
    "WEIGHT",
    "SCRAPED",
    "CHARS/TOK",
    "BLOCK",
    "KV TOKENS",
}


def _header(snapshot: StatusSnapshot) -> Text:
    info = snapshot.router
    updated = datetime.fromtimestamp(info.generated_at, UTC).strftime("%H:%M:%S UTC")
    text = Text()
    if info.policy == "direct":
        text.append("direct mode", style="bold")
        text.append(" (no router: sessions, Tier-1 owners and drift unknown)", style="dim")
    else:
        text.append("router ", style="dim")
        text.append(info.admin_url or info.url, style="bold")
        text.append("  policy ", style="dim")
        text.append(info.policy)
    text.append("  req/s ", style="dim")
    text.append(f"{info.requests_per_s:.1f}")
    text.append("  hit ", style="dim")
    text.append_text(percent(info.hit_rate, 1))
    if info.policy != "direct":
        text.append("  errors ", style="dim")
        text.append_text(_error_rate(snapshot.all))
        if snapshot.all.errors.window_s:
            text.append(f" over {snapshot.all.errors.window_s:g}s", style="dim")
        text.append("  drift ", style="dim")
        text.append_text(percent(info.drift_ratio, 1))
    text.append("  updated ", style="dim")
    text.append(updated)
    return text


def render_status(snapshot: StatusSnapshot, wide: bool = False) -> RenderableType:
    """Header line, the replica table with its ALL row, then one call-out line per imbalance."""
    parts: list[RenderableType] = [_header(snapshot), Text(""), status_table(snapshot, wide)]
    if snapshot.callouts:
        parts.append(Text(""))
        for callout in snapshot.callouts:
            parts.append(Text.assemble(("! ", "bold yellow"), callout))
    return Group(*parts)


# ---- sources ------------------------------------------------------------------------------------


def load_replica_list(path: Path) -> dict[str, str]:
    """Replica name -> URL from a router config file (read with the router's own loader)."""
    from pcache.router.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        fail(str(exc).splitlines()[0])
    if not config.replicas:
        fail(f"{path}: the config lists no replicas")
    return {replica.name: replica.url for replica in config.replicas}


def direct_source(named: dict[str, str], timeout: float) -> Callable[[], StatusSnapshot]:
    import httpx

    from pcache.direct import DirectState, direct_snapshot

    state: list[DirectState | None] = [None]

    async def once() -> StatusSnapshot:
        async with httpx.AsyncClient(timeout=timeout) as http:
            snapshot, state[0] = await direct_snapshot(named, http, state[0])
        return snapshot

    return lambda: asyncio.run(once())


def router_source(cli: CliContext) -> Callable[[], StatusSnapshot]:
    def once() -> StatusSnapshot:
        with cli.admin() as client:
            return client.status()

    return once


def _show(cli: CliContext, snapshot: StatusSnapshot, fmt: OutputFormat) -> None:
    """The snapshot in ``fmt``; custom columns get one line per replica (ALL last)."""
    all_row = snapshot.all.model_copy(update={"name": "ALL"})
    rows = [*sorted(snapshot.replicas, key=lambda r: r.name), all_row]
    emit(
        cli,
        fmt,
        document=snapshot,
        items=[snapshot],
        rows=rows,
        render=lambda wide: _status_view(cli, snapshot, wide),
    )


def _status_view(cli: CliContext, snapshot: StatusSnapshot, wide: bool) -> RenderableType:
    """The whole view, or with --no-headers only the replica rows (for grep and awk)."""
    if cli.headers:
        return render_status(snapshot, wide=wide)
    return status_table(snapshot, wide=wide)


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Fleet")
    def status(
        ctx: typer.Context,
        output: OutputOpt = None,
        watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until interrupted.")] = False,
        interval: Annotated[
            float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)
        ] = 2.0,
        count: Annotated[int, typer.Option(help="With --watch, stop after this many refreshes.", min=0)] = 0,
        replicas: Annotated[
            str | None,
            typer.Option(
                "--replicas",
                help="Direct mode: comma-separated replica URLs (or NAME=URL), read without a router.",
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option(
                "--config", "-c", help="Direct mode: read the replicas listed in this router config."
            ),
        ] = None,
    ) -> None:
        """The fleet at a glance: one row per replica plus ALL, with error and imbalance call-outs.

        Hit rate, TTFT and error rates cover the router's recent window (shown in the header).

        Examples:

          pcache status

          pcache status -o wide -w --interval 5

          pcache status -o json | jq '.replicas[] | {name, error_rate, ttft_p95}'

          pcache status --replicas http://gpu1:8000,http://gpu2:8000
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        if replicas and config:
            fail("give either --replicas or --config, not both", ExitCode.USAGE)
        if replicas:
            from pcache.direct import replica_names

            urls: Sequence[str] = [u.strip() for u in replicas.split(",") if u.strip()]
            if not urls:
                fail("--replicas needs at least one URL", ExitCode.USAGE)
            source = direct_source(replica_names(urls), cli.timeout)
        elif config:
            source = direct_source(load_replica_list(config), cli.timeout)
        else:
            source = router_source(cli)
        if not watch:
            shown = source()
            _show(cli, shown, fmt)
            if replicas or config:
                fail_on_unreachable(shown)
            return
        _watch(cli, source, fmt, interval, count)


def fail_on_unreachable(snapshot: StatusSnapshot) -> None:
    """Direct mode: after the table, exit 3 when no replica answered, 5 when some did not, with one
    line naming them (a script must not read "exit 0" as "the fleet is up")."""
    down = [row for row in snapshot.replicas if row.state == "unhealthy" and row.stale]
    if not down:
        return
    first = down[0]
    detail = f"{first.name} ({first.url}): {first.last_error or 'no answer'}"
    more = f" and {len(down) - 1} more" if len(down) > 1 else ""
    if len(down) == len(snapshot.replicas):
        fail(f"no replica answered: {detail}{more}", ExitCode.UNREACHABLE)
    fail(f"{len(down)} of {len(snapshot.replicas)} replicas did not answer: {detail}{more}", ExitCode.PARTIAL)


def _live(
    cli: CliContext, source: Callable[[], StatusSnapshot], fmt: OutputFormat, interval: float, count: int
) -> None:
    """Redraw one frame in place until ``count`` frames or Ctrl-C (the caller catches it)."""
    from rich.live import Live

    shown = 0
    with Live(console=cli.console(), auto_refresh=False) as live:
        while True:
            live.update(render_status(source(), wide=fmt is OutputFormat.WIDE), refresh=True)
            shown += 1
            if count and shown >= count:
                return
            time.sleep(interval)


def _watch(
    cli: CliContext, source: Callable[[], StatusSnapshot], fmt: OutputFormat, interval: float, count: int
) -> None:
    """Refresh in place on a terminal (rich Live); print one snapshot after another otherwise."""
    import sys

    from pcache_cli.terminal import quiet_interrupts

    shown = 0
    live_screen = not fmt.is_machine and sys.stdout.isatty()
    try:
        if live_screen:
            with quiet_interrupts():
                _live(cli, source, fmt, interval, count)
            return
        while True:
            _show(cli, source(), fmt)
            shown += 1
            if count and shown >= count:
                return
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return
