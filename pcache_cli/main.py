"""Entry point of the ``pcache`` command: global options and the command groups.

Each module registers its own commands; modules that need heavy imports (Textual, the router, the
simulator) import them inside their command functions, so ``pcache status`` stays light.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from pcache_cli import (
    config_cmd,
    demo,
    drain,
    drift,
    events,
    loadgen,
    pins,
    prefixes,
    prewarm,
    replay,
    replicas,
    route,
    router_cmd,
    routers,
    sim,
    status,
    top,
)
from pcache_cli.context import CliContext
from pcache_cli.global_flags import GlobalFlagsGroup
from pcache_cli.output import OUTPUT_HELP, OutputSpec, parse_output
from pcache_cli.settings import resolve

__all__ = ["app", "main"]

app = typer.Typer(
    cls=GlobalFlagsGroup,
    name="pcache",
    help="Cache-aware routing for fleets of LLM inference replicas.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    if source is None:
        return None
    return {"COMMANDLINE": "flag", "ENVIRONMENT": "env"}.get(source.name)


def _print_version(value: bool) -> None:
    if value:
        from pcache import __version__

        print(f"pcache {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    router: Annotated[
        str | None,
        typer.Option(
            "--router",
            envvar="PCACHE_ROUTER",
            help="Admin API URL of the router (default http://127.0.0.1:8081).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="PCACHE_ADMIN_TOKEN", help="Admin bearer token (needed for writes)."),
    ] = None,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="Monochrome output (also when NO_COLOR is set).")
    ] = False,
    output: Annotated[
        OutputSpec | None,
        typer.Option(
            "--output", "-o", envvar="PCACHE_OUTPUT", help=OUTPUT_HELP, metavar="FORMAT", parser=parse_output
        ),
    ] = None,
    no_headers: Annotated[
        bool, typer.Option("--no-headers", help="Drop the header row of tables and custom columns.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--request-timeout", envvar="PCACHE_TIMEOUT", help="Seconds to wait for the router.", min=0.1
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print pcache's version and exit."
        ),
    ] = False,
) -> None:
    """Cache-aware routing for fleets of LLM inference replicas.

    Global flags (--router, --token, --request-timeout, --no-color, --no-headers, -o) work before or
    after the subcommand: `pcache drain r3 --token T --router http://10.0.0.5:8081`.
    """
    del version  # handled by its eager callback
    given = {"router": router, "token": token, "output": output, "timeout": timeout, "no_color": no_color}
    sources: dict[str, str] = {}
    for key in ("router", "token", "output", "timeout"):
        source = _source(ctx, key)
        if source and given[key] is not None:
            sources[key] = source
    if no_color:
        sources["no_color"] = "flag"
    elif os.environ.get("NO_COLOR"):
        given["no_color"] = True
        sources["no_color"] = "env"
    if os.environ.get("PCACHE_PROMETHEUS"):
        given["prometheus"] = os.environ["PCACHE_PROMETHEUS"]
        sources["prometheus"] = "env"
    values, value_sources, path = resolve(given, sources)
    previous = ctx.obj if isinstance(ctx.obj, CliContext) else None
    spec: OutputSpec = values["output"]
    ctx.obj = CliContext(
        router=values["router"],
        token=values["token"],
        no_color=values["no_color"],
        output=spec.format,
        columns=spec.columns,
        headers=not no_headers,
        timeout=values["timeout"],
        prometheus=values["prometheus"],
        sources=value_sources,
        config_file=str(path) if path else None,
        transport=previous.transport if previous else None,
    )


for module in (
    status,
    replicas,
    drain,
    pins,
    prewarm,
    prefixes,
    route,
    drift,
    events,
    config_cmd,
    router_cmd,
    routers,
    sim,
    replay,
    top,
    demo,
    loadgen,
):
    module.register(app)


@app.command(rich_help_panel="Other")
def version() -> None:
    """Print pcache's version.

    Examples:

      pcache version

      pcache --version
    """
    from pcache import __version__

    print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
