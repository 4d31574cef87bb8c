"""Entry point of the ``pcache`` command: assembles the command groups.

Each module registers its own commands; modules that need heavy imports (Textual, the router, the
simulator) import them inside their command functions, so ``pcache status`` stays light.
"""

from __future__ import annotations

import typer

from pcache_cli import demo, loadgen, replay, router_cmd, sim, top

app = typer.Typer(
    name="pcache",
    help="Cache-aware routing for fleets of LLM inference replicas.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

for module in (router_cmd, sim, replay, top, demo, loadgen):
    module.register(app)


@app.command(rich_help_panel="Other")
def version() -> None:
    """Print pcache's version."""
    from pcache import __version__

    print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
