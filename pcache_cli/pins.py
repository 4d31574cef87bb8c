"""`pcache pin`, `pcache unpin` and `pcache pins`: Tier-1 prefixes held on chosen replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table
from rich.text import Text

from pcache.api import PinIn, PinOut
from pcache.operator.prefixes_file import PrefixFileError, read_text_file
from pcache_cli.common import ExitCode, fail, info
from pcache_cli.completion import complete_pin, complete_prefix
from pcache_cli.context import CliContext, get_context
from pcache_cli.output import OutputFormat, OutputOpt, emit
from pcache_cli.prewarm import follow_job, report_job, split_names

__all__ = ["pins_table", "register"]


def pins_table(pins: list[PinOut], wide: bool = False) -> Table:
    """Pinned and registered Tier-1 prefixes, sorted by name."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    headers = ["NAME", "SOURCE", "TOKENS", "PINNED TO", "COPIES", "OWNERS"]
    if wide:
        headers += ["GROUP", "TEXT"]
    for header in headers:
        table.add_column(header, no_wrap=True, justify="right" if header in ("TOKENS", "COPIES") else "left")
    for pin in sorted(pins, key=lambda p: p.name):
        cells: list[str | Text] = [
            pin.name,
            pin.source,
            str(pin.tokens),
            ", ".join(pin.replicas) or Text("HRW top-k", style="dim"),
            str(pin.copies),
            ", ".join(pin.owners) or "-",
        ]
        if wide:
            cells += [pin.group or "-", pin.text_head.replace("\n", "\\n")]
        table.add_row(*cells)
    return table


def _emit(cli: CliContext, pins: list[PinOut], fmt: OutputFormat) -> None:
    pins = sorted(pins, key=lambda p: p.name)
    emit(cli, fmt, document=pins, items=pins, render=lambda wide: pins_table(pins, wide=wide))


def _emit_one(cli: CliContext, pin: PinOut, fmt: OutputFormat) -> None:
    if fmt in (OutputFormat.JSON, OutputFormat.YAML):
        emit(cli, fmt, document=pin, items=[pin], render=lambda wide: pins_table([pin], wide=wide))
    else:
        _emit(cli, [pin], fmt)


def _read_text(text: str | None, file: Path | None) -> str | None:
    """The prefix text from --text or --file; None (re-pin a registered prefix by name) for neither."""
    if text is not None and file is not None:
        fail("give --text or --file, not both", ExitCode.USAGE)
    if text is None and file is None:
        return None
    if text is not None:
        if not text:
            fail("--text must not be empty", ExitCode.USAGE)
        return text
    assert file is not None
    try:
        content = read_text_file(file)
    except PrefixFileError as exc:
        fail(str(exc))
    if not content:
        fail(f"{file}: empty file")
    return content


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Actions")
    def pin(
        ctx: typer.Context,
        name: Annotated[
            str, typer.Argument(help="Name of the Tier-1 prefix.", autocompletion=complete_prefix)
        ],
        text: Annotated[str | None, typer.Option("--text", help="The prefix text.")] = None,
        file: Annotated[Path | None, typer.Option("--file", help="Read the prefix text from a file.")] = None,
        replicas: Annotated[str | None, typer.Option(help="Comma-separated replicas to pin it to.")] = None,
        copies: Annotated[
            int | None, typer.Option(help="Keep it on the top K replicas of its HRW ranking.", min=1)
        ] = None,
        group: Annotated[str | None, typer.Option(help="Restrict it to a replica group.")] = None,
        as_: Annotated[
            Literal["chat", "completion"], typer.Option("--as", help="How requests render the prefix.")
        ] = "chat",
        prewarm: Annotated[bool, typer.Option("--prewarm", help="Warm it on its replicas now.")] = False,
        timeout: Annotated[
            float, typer.Option(help="Seconds to wait for --prewarm (exit 4 after).", min=0)
        ] = 300.0,
        output: OutputOpt = None,
    ) -> None:
        """Pin a Tier-1 prefix to replicas (or to K copies) so its requests go there.

        Without --text or --file, the registered prefix NAME is re-pinned with its own text.

        Examples:

          pcache pin sys --file system_prompt.txt --copies 2

          pcache pin tools --text "You are a coding assistant." --replicas r1,r2 --prewarm
        """
        cli = get_context(ctx)
        fmt = cli.output_for(output)
        body = _read_text(text, file)
        names = split_names(replicas)
        if names and copies:
            fail("give either --replicas or --copies, not both", ExitCode.USAGE)
        request = PinIn(text=body, replicas=names, copies=copies, group=group, prewarm=prewarm, **{"as": as_})
        with cli.admin(subject=f"pin {name}") as client:
            result = client.pin(name, request)
            _emit_one(cli, result, fmt)
            info(f"pinned {result.name} to {', '.join(result.replicas or result.owners) or 'its HRW top-k'}")
            if prewarm and result.prewarm_job:
                job = follow_job(cli, client, client.prewarm_job(result.prewarm_job), timeout)
                report_job(cli, job, None if fmt.is_machine else OutputFormat.TABLE, verify=False)

    @app.command(rich_help_panel="Actions")
    def unpin(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Name of the pinned prefix.", autocompletion=complete_pin)],
        output: OutputOpt = None,
    ) -> None:
        """Remove a pin; the prefix's requests follow the routing policy again.

        Examples:

          pcache unpin sys

          pcache unpin sys -o json
        """
        cli = get_context(ctx)
        with cli.admin(subject=f"pin {name}") as client:
            result = client.unpin(name)
        fmt = cli.output_for(output)
        if fmt.is_machine:
            _emit_one(cli, result, fmt)
        else:
            cli.console().print(f"unpinned {result.name}")

    @app.command(rich_help_panel="Fleet")
    def pins(ctx: typer.Context, output: OutputOpt = None) -> None:
        """List pinned and registered Tier-1 prefixes with their replicas and current owners.

        Examples:

          pcache pins

          pcache pins -o custom-columns=NAME:.name,COPIES:.copies,OWNERS:.owners
        """
        cli = get_context(ctx)
        with cli.admin() as client:
            result = client.pins()
        _emit(cli, result, cli.output_for(output))
