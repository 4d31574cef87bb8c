"""Assemble a :class:`~pcache_console.app.TopApp` from command-line settings (router or direct)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from pcache.client import AdminClient
from pcache.credentials import local_token_for
from pcache_console.app import HistoryLoader, TopApp
from pcache_console.prometheus import load_history
from pcache_console.source import DirectSource, RouterSource, Source

__all__ = ["build_app"]


def build_app(
    *,
    admin_url: str,
    token: str | None,
    timeout_s: float = 5.0,
    replicas: Sequence[str] = (),
    refresh_s: float = 2.0,
    readonly: bool = False,
    prometheus_url: str | None = None,
    window_s: float = 900.0,
    top_prefixes: int = 30,
) -> TopApp:
    """Direct mode when ``replicas`` are given (no router actions), the router's admin API otherwise."""
    source: Source
    if replicas:
        source = DirectSource(replicas, timeout=timeout_s)
    else:
        # No token given: a router on this machine's generated one (pcache.credentials).
        client = AdminClient(admin_url, token=token or local_token_for(admin_url), timeout=timeout_s)
        source = RouterSource(client, top_prefixes=top_prefixes, drift_window_s=window_s)
    loader: HistoryLoader | None = None
    if prometheus_url:
        loader = partial(load_history, prometheus_url, window_s=window_s)
    return TopApp(
        source,
        refresh_s=refresh_s,
        readonly=readonly,
        history_loader=loader,
        window_s=window_s,
        freeze_gc=True,  # one console per `pcache top` process
    )
