"""Per-invocation CLI state: where the router is, how to talk to it, and how to print.

The root callback builds one :class:`CliContext` and stores it on ``ctx.obj``; every command reads it
with :func:`get_context`. :meth:`CliContext.admin` is the one place where the admin client's errors
become exit codes and a single stderr line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import typer
from rich.console import Console

from pcache.client import (
    DEFAULT_ADMIN_URL,
    AdminError,
    ApiError,
    NotFound,
    Refused,
    RouterTimeout,
    RouterUnreachable,
    SyncAdminClient,
    Unauthorized,
)
from pcache.credentials import local_token_for
from pcache_cli.common import ExitCode, fail
from pcache_cli.output import Column, OutputFormat, OutputSpec

__all__ = ["CliContext", "get_context"]

_DATA_WIDTH = 200  # stdout width when it is not a terminal, so tables are never squeezed in pipes


@dataclass
class CliContext:
    """Effective global settings plus the sources they came from (for ``pcache config show``)."""

    router: str = DEFAULT_ADMIN_URL
    token: str | None = None
    no_color: bool = False
    output: OutputFormat = OutputFormat.TABLE
    columns: tuple[Column, ...] = ()  # with -o custom-columns=...
    headers: bool = True  # False with --no-headers
    timeout: float = 5.0
    prometheus: str | None = None  # Prometheus URL for the console's history
    sources: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    transport: httpx.BaseTransport | None = None  # tests inject the edge here

    @property
    def color(self) -> bool:
        return not self.no_color and "NO_COLOR" not in os.environ

    def output_for(self, override: OutputSpec | OutputFormat | None) -> OutputFormat:
        """A command's own ``-o`` wins over the global one (and brings its custom columns)."""
        if override is None:
            return self.output
        if isinstance(override, OutputFormat):
            return override
        self.columns = override.columns
        return override.format

    def console(self) -> Console:
        """Console for data (stdout)."""
        return Console(
            file=sys.stdout,
            no_color=not self.color,
            highlight=False,
            soft_wrap=False,
            width=None if sys.stdout.isatty() else _DATA_WIDTH,
        )

    def err_console(self) -> Console:
        """Console for messages and progress (stderr)."""
        return Console(file=sys.stderr, no_color=not self.color, highlight=False, stderr=True)

    @contextmanager
    def admin(self, subject: str | None = None) -> Iterator[SyncAdminClient]:
        """A connected admin client; any client error exits with one line and its exit code.

        ``subject`` names what the command acts on (``replica r3``) so a 404 says what was missing.
        """
        check_router_url(self.router)
        try:
            # No token given: a router on this machine's generated one (pcache.credentials).
            token = self.token or local_token_for(self.router)
            with SyncAdminClient(
                self.router, token=token, timeout=self.timeout, transport=self.transport
            ) as client:
                yield client
        except AdminError as exc:
            report_admin_error(exc, router=self.router, subject=subject)


def check_router_url(url: str) -> None:
    """Exit 2 with a suggestion when ``--router`` is not an http(s) URL (``127.0.0.1:8081``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return
    guess = "http://" + url.split("://", 1)[-1].lstrip("/")
    fail(f"--router {url!r} is not an http(s) URL; did you mean {guess}?", ExitCode.USAGE)


def report_admin_error(exc: AdminError, *, router: str, subject: str | None = None) -> None:
    """Map an admin-client error to its exit code with one readable line (no traceback)."""
    if isinstance(exc, RouterTimeout):
        fail(f"{_first_line(str(exc))}; raise --request-timeout or PCACHE_TIMEOUT", ExitCode.TIMEOUT)
    if isinstance(exc, RouterUnreachable):
        fail(
            f"{_first_line(str(exc))}; is `pcache router serve` running? set --router or PCACHE_ROUTER",
            ExitCode.UNREACHABLE,
        )
    if isinstance(exc, Unauthorized):
        fail(
            f"unauthorized ({exc.status}) at {router}: {exc.message}; "
            "check --token or PCACHE_ADMIN_TOKEN (the router's admin token)",
        )
    if isinstance(exc, NotFound) and exc.message.startswith("unknown path /api/"):
        fail(
            f"{router} looks like the router's data plane (the OpenAI API), not its admin API; "
            "the admin API listens on its own address (admin.listen in the router config, "
            "default http://127.0.0.1:8081)",
            ExitCode.USAGE,
        )
    if isinstance(exc, NotFound):
        what = f"{subject} not found" if subject else "not found"
        fail(f"{what}: {exc.message}")
    if isinstance(exc, Refused):
        fail(f"refused by the router: {exc.message}")
    if isinstance(exc, ApiError):
        fail(f"router error ({exc.status}): {exc.message}")
    fail(str(exc))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no answer"


def get_context(ctx: typer.Context) -> CliContext:
    """The :class:`CliContext` the root callback stored (a default one when run without it)."""
    obj: Any = ctx.find_root().obj
    if isinstance(obj, CliContext):
        return obj
    return CliContext()
