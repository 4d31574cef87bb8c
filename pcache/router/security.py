"""The router's own defences: its admin token, start-time warnings, and the admin API's guard.

* :func:`admin_token` - the configured token (checked: not blank, not short) or, when none is
  configured, the one generated and kept owner-only by :mod:`pcache.credentials`.
* :func:`open_doors` - one line per thing left open, logged as a warning at start.
* :class:`AdminGuard` - ASGI middleware in front of the admin app: refuses cross-origin browser
  requests (a form on ``http://evil.example`` POSTing a drain; ``Origin`` and ``Sec-Fetch-Site``
  say so) and bodies over the limit, with OpenAI-style error bodies, before the app parses anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pcache.credentials import TokenError, check_token, load_or_create_token
from pcache.router.config import ConfigError, RouterConfig, is_loopback, split_host_port

__all__ = ["AdminGuard", "admin_token", "configured_admin_token", "open_doors"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def configured_admin_token(config: RouterConfig) -> str | None:
    """The token from ``admin.token_env``, checked; None when that variable is not set at all."""
    name = config.admin.token_env
    if not name or name not in os.environ:
        return None
    try:
        token = check_token(os.environ[name], f"${name}")
    except TokenError as exc:
        raise ConfigError(f"admin.token_env: {exc}") from None
    return token


def admin_token(config: RouterConfig) -> tuple[str, Path | None]:
    """The admin token the router enforces, and the file it came from when it was generated.

    A non-loopback admin listener needs a configured token: a generated one lives only on this
    machine, so remote operators could not use it.
    """
    token = configured_admin_token(config)
    if token is not None:
        return token, None
    admin_host, _ = split_host_port(config.admin.listen)
    if not is_loopback(admin_host):
        raise ConfigError(
            f"admin.listen {config.admin.listen} is not a loopback address: set a token in the "
            f"environment variable named by admin.token_env ({config.admin.token_env or 'unset'})"
        )
    try:
        return load_or_create_token()
    except TokenError as exc:
        raise ConfigError(f"admin token: {exc}") from None


def open_doors(config: RouterConfig) -> list[str]:
    """What a client can do without credentials, one sentence each (empty when nothing is open)."""
    doors = []
    data_host, _ = split_host_port(config.listen)
    admin_host, _ = split_host_port(config.admin.listen)
    if not is_loopback(data_host) and not config.api_keys():
        doors.append(
            f"the data plane listens on {config.listen} and needs no API key: set api_keys_env to require one"
        )
    if not is_loopback(admin_host) and not config.admin.auth_reads:
        doors.append(
            f"the admin API listens on {config.admin.listen} and serves reads without a token: "
            "set admin.auth_reads to require it"
        )
    return doors


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _cross_origin(scope: Scope) -> str | None:
    """Why a request is a cross-origin browser request, or None when it is not one."""
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site.lower() in (b"cross-site", b"same-site"):
        return f"Sec-Fetch-Site: {site.decode('latin-1')}"
    origin = _header(scope, b"origin")
    if origin is None:
        return None  # not a browser's cross-origin request (curl, the CLI, the console)
    host = _header(scope, b"host") or b""
    parts = urlsplit(origin.decode("latin-1"))
    if parts.scheme not in ("http", "https") or parts.netloc.encode("latin-1").lower() != host.lower():
        return f"Origin: {origin.decode('latin-1')[:100]}"
    return None


class AdminGuard:
    """Cross-origin and body-size checks in front of the admin app."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        why = _cross_origin(scope)
        if why is not None:
            await _refuse(
                send, 403, f"cross-origin requests are refused ({why})", "permission_error", "cross_origin"
            )
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            # Over the limit: answer 413 now and tell the app its client left, so it stops reading
            # and whatever it sends afterwards is dropped.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:  # the app's complaint about the "disconnect" we told it of is expected
                raise

    async def _too_large(self, send: Send) -> None:
        await _refuse(
            send,
            413,
            f"request body exceeds {self.max_body_bytes} bytes",
            "invalid_request_error",
            "request_too_large",
        )


async def _refuse(send: Send, status: int, message: str, type_: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
