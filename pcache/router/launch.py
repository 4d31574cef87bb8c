"""Start the router daemon from a config file: ``python -m pcache.router`` and ``pcache router serve``
share this, so the engine's own tools (demo, test launchers) start it without the CLI package."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from pcache.router.config import ConfigError, RouterConfig, load_config

__all__ = ["config_error_lines", "main", "serve"]


def config_error_lines(exc: ConfigError) -> list[str]:
    """The error as readable lines (a config can be wrong in several places at once)."""
    return str(exc).splitlines() or ["invalid config"]


def serve(config: RouterConfig, *, reset_state: bool = False, workers: int = 1) -> None:
    """Serve the data plane and the admin API until SIGINT/SIGTERM (``ConfigError`` if the config
    cannot be served, for example a port already taken or a non-loopback admin without a token).
    ``reset_state`` starts without the stored operator state, ``workers`` > 1 runs that many
    data-plane processes on one port (see ``daemon.run``)."""
    from pcache.router.daemon import run

    with contextlib.suppress(KeyboardInterrupt):
        run(config, reset_state=reset_state, workers=workers)


def main(argv: Sequence[str] | None = None) -> int:
    """Load ``-c CONFIG`` and serve it; 2 with one ``error:`` line per problem if it is invalid."""
    parser = argparse.ArgumentParser(
        prog="python -m pcache.router",
        description="Serve the OpenAI-compatible data plane and the admin API until interrupted.",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="router config YAML")
    parser.add_argument(
        "--reset-state",
        action="store_true",
        help="start over without the stored operator state (a state file is moved aside first)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-plane processes on the same port (SO_REUSEPORT), sharing the state store",
    )
    arguments = parser.parse_args(argv)
    if arguments.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        serve(load_config(arguments.config), reset_state=arguments.reset_state, workers=arguments.workers)
    except ConfigError as exc:
        for line in config_error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0
