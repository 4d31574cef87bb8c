"""Shell completion of replica, pin and prefix names, asked of the router quietly.

Completion runs before the root callback, so the router URL and token come from the parsed (or
environment) values of the root options. Any failure completes nothing: a shell must never see an
error message while the user presses Tab.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from pcache.client import DEFAULT_ADMIN_URL, AdminError, SyncAdminClient

__all__ = ["complete_pin", "complete_prefix", "complete_replica"]

_COMPLETION_TIMEOUT = 1.0


def _ask(ctx: typer.Context, question: Callable[[SyncAdminClient], list[str]]) -> list[str]:
    params = ctx.find_root().params
    router = params.get("router") or DEFAULT_ADMIN_URL
    try:
        with SyncAdminClient(router, token=params.get("token"), timeout=_COMPLETION_TIMEOUT) as client:
            return sorted(set(question(client)))
    except (AdminError, ValueError, OSError):
        return []


def complete_replica(ctx: typer.Context, incomplete: str) -> list[str]:
    """Replica names known to the router that start with what was typed."""
    names = _ask(ctx, lambda client: [replica.name for replica in client.replicas()])
    return [name for name in names if name.startswith(incomplete)]


def complete_pin(ctx: typer.Context, incomplete: str) -> list[str]:
    """Names of pinned (and registered) Tier-1 prefixes."""
    names = _ask(ctx, lambda client: [pin.name for pin in client.pins()])
    return [name for name in names if name.startswith(incomplete)]


def complete_prefix(ctx: typer.Context, incomplete: str) -> list[str]:
    """Tier-1 prefix names, pinned or seen in the heat map."""

    def question(client: SyncAdminClient) -> list[str]:
        names = [pin.name for pin in client.pins()]
        names += [row.name for row in client.prefixes(top=100).prefixes if row.name]
        return names

    return [name for name in _ask(ctx, question) if name.startswith(incomplete)]
