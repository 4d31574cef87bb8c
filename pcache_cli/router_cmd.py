"""`pcache router` commands: run the daemon, check a config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pcache_cli.common import ExitCode, fail, info

if TYPE_CHECKING:
    from pcache.router.config import RouterConfig

router_app = typer.Typer(help="Run the cache-aware router daemon.", no_args_is_help=True)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Router config YAML (see configs/router.yaml).", show_default=False),
]


def _load(path: Path) -> RouterConfig:
    """The config after every check ``serve`` makes before binding (exit 2 on any problem)."""
    from pcache.router.checks import check_config_file
    from pcache.router.config import ConfigError
    from pcache.router.launch import config_error_lines

    try:
        return check_config_file(path)
    except ConfigError as exc:
        lines = config_error_lines(exc)
        for line in lines[:-1]:
            info(f"error: {line}")
        fail(lines[-1], ExitCode.USAGE)


@router_app.command()
def serve(
    config: ConfigOption,
    reset_state: Annotated[
        bool,
        typer.Option(
            "--reset-state",
            help="Start over without the stored operator state (a state file is moved aside first).",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Data-plane processes on the same port (SO_REUSEPORT), sharing the state store.",
        ),
    ] = 1,
) -> None:
    """Serve the OpenAI-compatible data plane and the admin API until interrupted.

    Examples:

      pcache router serve -c router.yaml
    """
    from pcache.router.config import ConfigError
    from pcache.router.launch import serve as serve_config

    loaded = _load(config)
    try:
        serve_config(loaded, reset_state=reset_state, workers=workers)
    except ConfigError as exc:
        fail(str(exc), ExitCode.USAGE)


@router_app.command("check-config")
def check_config(config: ConfigOption) -> None:
    """Validate a router config and print a one-line summary of it.

    Examples:

      pcache router check-config -c router.yaml
    """
    loaded = _load(config)
    print(
        f"ok: {len(loaded.replicas)} replicas, {len(loaded.tier1)} Tier-1 prefixes, "
        f"policy {loaded.policy.name}, data plane {loaded.listen}, admin {loaded.admin.listen}"
    )


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(router_app, name="router", rich_help_panel="Daemon")
