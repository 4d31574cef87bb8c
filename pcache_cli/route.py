"""`pcache route explain`: where would the router send this request, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pcache.api import DecisionOut, ExplainRequest
from pcache.operator.prefixes_file import PrefixFileError, read_text_file
from pcache_cli.common import ExitCode, fail
from pcache_cli.context import get_context
from pcache_cli.output import OutputOpt, emit

__all__ = ["read_request_file", "register", "render_decision"]


def render_decision(decision: DecisionOut) -> RenderableType:
    """The chosen replica and reason, then every candidate with its score and exclusion reason."""
    head = Text()
    head.append("replica ", style="dim")
    head.append(decision.replica or "none", style="bold green" if decision.replica else "bold red")
    head.append("  reason ", style="dim")
    head.append(decision.reason)
    head.append("  policy ", style="dim")
    head.append(decision.policy)
    details = Text()
    details.append("session ", style="dim")
    details.append(f"{decision.session or '-'} ({decision.session_source or 'none'})")
    details.append("  tier-1 ", style="dim")
    details.append(decision.tier1 or "-")
    details.append("  prompt tokens ", style="dim")
    details.append(str(decision.prompt_tokens))
    details.append("  blocks ", style="dim")
    details.append(str(decision.blocks))
    details.append("  predicted cached ", style="dim")
    details.append(str(decision.predicted_cached_tokens))
    if decision.chars_per_token is not None:
        learned = "calibrated on the engines" if decision.chars_per_token_calibrated else "default"
        details.append("  chars/token ", style="dim")
        details.append(f"{decision.chars_per_token:.2f} ({learned})")
    if decision.engine_block_size:
        details.append("  engine block ", style="dim")
        details.append(str(decision.engine_block_size))
    if decision.drift_cause:
        details.append("  drift ", style="dim")
        details.append(decision.drift_cause, style="yellow")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("CANDIDATE", no_wrap=True)
    table.add_column("SCORE", justify="right", no_wrap=True)
    table.add_column("LOAD", justify="right", no_wrap=True)
    table.add_column("CACHED", justify="right", no_wrap=True)
    table.add_column("INDEX", no_wrap=True)
    table.add_column("MEDIA", no_wrap=True)
    table.add_column("EXCLUDED")
    for candidate in decision.candidates:
        chosen = candidate.replica == decision.replica
        media = " ".join(f"{m}:{n}" for m, n in sorted(candidate.cached_tokens_by_medium.items()))
        table.add_row(
            Text("→" if chosen else "", style="green"),
            Text(candidate.replica, style="bold" if chosen else ""),
            f"{candidate.score:.4g}",
            str(candidate.load),
            "-" if candidate.cached_tokens is None else str(candidate.cached_tokens),
            candidate.cache_source or "-",
            media or "-",
            Text(candidate.excluded or "", style="yellow"),
        )
    return Group(head, details, Text(""), table)


def read_request_file(path: Path) -> dict[str, object]:
    """An OpenAI chat or completion body from a JSON file; errors name the file and line."""
    try:
        text = read_text_file(path)
    except PrefixFileError as exc:
        fail(str(exc))
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}")
    if not isinstance(body, dict) or not ("messages" in body or "prompt" in body):
        fail(f"{path}: expected a chat (`messages`) or completion (`prompt`) request body")
    return body


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Ask the router how it would route a request.", no_args_is_help=True)
    app.add_typer(group, name="route", rich_help_panel="Fleet")

    @group.command("explain")
    def explain(
        ctx: typer.Context,
        prompt: Annotated[str | None, typer.Option("--prompt", help="The prompt text.")] = None,
        file: Annotated[
            Path | None, typer.Option("--file", help="A JSON request body (chat or completion).")
        ] = None,
        session: Annotated[str | None, typer.Option("--session", help="Session id to route as.")] = None,
        as_: Annotated[
            Literal["chat", "completion"], typer.Option("--as", help="How to send --prompt.")
        ] = "chat",
        model: Annotated[str | None, typer.Option(help="Model name to put in the request.")] = None,
        output: OutputOpt = None,
    ) -> None:
        """Show the routing decision for a request, with every candidate's score and exclusion.

        Examples:

          pcache route explain --prompt "You are a helpful assistant. Hi"

          pcache route explain --file request.json --session user-42 -o yaml
        """
        cli = get_context(ctx)
        if (prompt is None) == (file is None):
            fail("give exactly one of --prompt or --file", ExitCode.USAGE)
        if prompt == "":
            fail("--prompt must not be empty", ExitCode.USAGE)
        if file is not None:
            body = read_request_file(file)
        elif as_ == "chat":
            body = {"messages": [{"role": "user", "content": prompt}]}
        else:
            body = {"prompt": prompt}
        if model and "model" not in body:
            body["model"] = model
        with cli.admin() as client:
            decision = client.explain(ExplainRequest(body=body, session=session))
        fmt = cli.output_for(output)
        emit(cli, fmt, document=decision, items=[decision], render=lambda _wide: render_decision(decision))
