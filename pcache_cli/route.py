"""`pcache route explain`: where would the router send this request, and why."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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

__all__ = ["SCORE_UNITS", "ScoreUnit", "read_request_file", "register", "render_decision", "score_unit"]


@dataclass(frozen=True)
class ScoreUnit:
    """How a policy's candidate score reads: the column's header, the value with its unit, and
    what decides between candidates that score the same."""

    header: str
    show: Callable[[float], str]
    ties: str


# Each policy scores in its own unit (see pcache/policy/*); the CLI names it instead of a bare number.
SCORE_UNITS: dict[str, ScoreUnit] = {
    "tiered": ScoreUnit(
        "PREFILL COST",
        lambda score: f"{max(0.0, -score):,.0f} tok",
        "session home first, then lower load, then the HRW rank of the request's key",
    ),
    "cache_aware": ScoreUnit("MATCH", lambda score: f"{score:.0f} blk", "lower load, then replica order"),
    "least_load": ScoreUnit(
        "LOAD", lambda score: f"{max(0.0, -score):.0f} req", "the HRW rank of the request's key"
    ),
    "round_robin": ScoreUnit(
        "TURN", lambda score: f"{score:.0f}", "the rotation (it moves on every request)"
    ),
}
_HRW = ScoreUnit("HRW SCORE", lambda score: f"{score:.4f}", "none needed: HRW scores differ per replica")


def score_unit(policy: str) -> ScoreUnit:
    """The unit of ``policy``'s scores (HRW policies: prefix_hash, session; the default)."""
    return SCORE_UNITS.get(policy, _HRW)


def _ties(decision: DecisionOut, unit: ScoreUnit) -> Text | None:
    """A line naming the candidates that score the same as the chosen one, and what broke the tie."""
    chosen = next((c for c in decision.candidates if c.replica == decision.replica), None)
    if chosen is None:
        return None
    tied = [c.replica for c in decision.candidates if not c.excluded and c.score == chosen.score]
    if len(tied) < 2:
        return None
    return Text.assemble(
        ("tie ", "dim"),
        f"{', '.join(tied)} at {unit.show(chosen.score)}",
        ("; broken by ", "dim"),
        unit.ties,
        ("; the same on every call while the fleet is unchanged", "dim"),
    )


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
    unit = score_unit(decision.policy)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("#", justify="right", no_wrap=True)  # the order the policy tried them in
    table.add_column("CANDIDATE", no_wrap=True)
    table.add_column(unit.header, justify="right", no_wrap=True)
    table.add_column("IN-FLIGHT", justify="right", no_wrap=True)
    table.add_column("CACHED", justify="right", no_wrap=True)
    table.add_column("INDEX", no_wrap=True)
    table.add_column("MEDIA", no_wrap=True)
    table.add_column("EXCLUDED")
    for rank, candidate in enumerate(decision.candidates, start=1):
        chosen = candidate.replica == decision.replica
        media = " ".join(f"{m}:{n}" for m, n in sorted(candidate.cached_tokens_by_medium.items()))
        table.add_row(
            Text("→" if chosen else "", style="green"),
            str(rank),
            Text(candidate.replica, style="bold" if chosen else ""),
            unit.show(candidate.score),
            f"{candidate.load} req",
            "-" if candidate.cached_tokens is None else str(candidate.cached_tokens),
            candidate.cache_source or "-",
            media or "-",
            Text(candidate.excluded or "", style="yellow"),
        )
    parts: list[RenderableType] = [head, details]
    tie = _ties(decision, unit)
    if tie is not None:
        parts.append(tie)
    return Group(*parts, Text(""), table)


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
