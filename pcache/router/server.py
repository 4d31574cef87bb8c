"""The listeners' HTTP server settings: connection timeouts, the fd budget, load shedding.

uvicorn arms its keep-alive timer only after a response, so a connection that never sends a
request, or sends its head a byte at a time (slowloris), stays open for ever; 1,100 of them used up
the default 1,024 file descriptors and every new request failed with nothing logged.
:class:`GuardedHttpProtocol` closes a connection whose request head is not complete within
``head_timeout_s`` of its first byte (or of the connection opening); request bodies get a timeout in
the apps (``body_timeout_s`` per read). At start :func:`raise_fd_limit` raises the soft limit of open
files to the hard limit, and :func:`server_settings` caps connections per listener below it, so past
that uvicorn sheds load with a 503 (and a warning in the log) instead of running out of fds.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pcache.router.config import ServerConfig

__all__ = ["GuardedHttpProtocol", "connection_limit", "guarded_protocol", "raise_fd_limit", "server_settings"]

_RESERVED_FDS = 128  # state store, logs, metrics scrapes, the fingerprint worker's pipes


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(config: ServerConfig, fd_limit: int, upstream_connections: int) -> int:
    """Client connections per listener: configured, or what the fds leave after the upstream pool
    and a reserve, split between the data plane and the admin API."""
    available = max(fd_limit - _RESERVED_FDS - upstream_connections, 64)
    budget = max(available // 2, 32)
    return min(config.max_connections, budget) if config.max_connections else budget


class GuardedHttpProtocol(HttpToolsProtocol):
    """httptools' protocol plus a deadline for each request head."""

    head_timeout_s = 10.0

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()  # a keep-alive connection's next request has the same deadline

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head did not arrive in time")
            self.transport.close()


def guarded_protocol(head_timeout_s: float) -> type[GuardedHttpProtocol]:
    """The protocol class with this deadline (uvicorn takes a class, not an instance)."""
    return type("GuardedHttp", (GuardedHttpProtocol,), {"head_timeout_s": head_timeout_s})


def server_settings(config: ServerConfig, limit: int) -> dict[str, Any]:
    """uvicorn settings shared by both listeners."""
    return {
        "loop": "none",
        "http": guarded_protocol(config.head_timeout_s),
        "ws": "none",  # an upgrade request is an ordinary request: the apps answer it (4xx)
        "lifespan": "off",
        "access_log": False,
        "server_header": False,
        "date_header": False,  # proxied responses keep the replica's own Date
        "proxy_headers": False,
        "log_config": None,
        "timeout_keep_alive": config.keep_alive_s,
        "timeout_graceful_shutdown": 10,  # then in-flight streams are cut
        "backlog": 2048,
        "limit_concurrency": limit,
    }
