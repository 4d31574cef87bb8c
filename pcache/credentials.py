"""The admin token a router generates when none is configured, and where local clients find it.

Secure by default, kubeconfig-style: a router started without ``admin.token_env`` set generates a
random token at its first start and keeps it in ``$PCACHE_STATE_DIR/admin-token`` (default
``$XDG_STATE_HOME/pcache/admin-token``, i.e. ``~/.local/state/pcache/admin-token``), created with
owner-only permissions (directory 0700, file 0600) and reused by later starts. The CLI and the
console running as the same user read it from there when no token is given (``--token`` and
``PCACHE_ADMIN_TOKEN`` still win), and only for a router on a loopback address, so the token is
never sent to another machine. A token the operator configures must be at least
:data:`MIN_TOKEN_CHARS` characters and not blank.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "MIN_TOKEN_CHARS",
    "TokenError",
    "check_token",
    "load_or_create_token",
    "local_token_for",
    "state_dir",
    "token_path",
]

MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A token that must not be used, or a token file that cannot be trusted."""


def state_dir() -> Path:
    """Where the router keeps its per-user files: ``$PCACHE_STATE_DIR``, else the XDG state home."""
    explicit = os.environ.get("PCACHE_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pcache"


def token_path() -> Path:
    """The generated admin token's file."""
    return state_dir() / "admin-token"


def check_token(token: str, source: str) -> str:
    """``token`` if it is usable; a blank or short one raises :class:`TokenError` naming ``source``."""
    if not token.strip():
        raise TokenError(f"the admin token from {source} is blank")
    if token != token.strip():
        raise TokenError(f"the admin token from {source} has leading or trailing whitespace")
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"the admin token from {source} has {len(token)} characters; at least {MIN_TOKEN_CHARS} needed"
        )
    return token


def _read_private(path: Path) -> str:
    """The token in ``path``, refused when another user could have written or read it."""
    info = path.stat()
    if info.st_uid != os.getuid():
        raise TokenError(f"{path} belongs to another user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise TokenError(
            f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
        )
    return check_token(path.read_text(encoding="ascii").strip(), str(path))


def load_or_create_token() -> tuple[str, Path]:
    """The generated token and its file, creating both (owner-only) on the first start."""
    path = token_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _read_private(path), path
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(token + "\n")
        return token, path
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot use the admin token file {path}: {exc}") from exc


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_token_for(router_url: str) -> str | None:
    """The generated token, for a client of a router on this machine; None when there is none."""
    if not _is_loopback_url(router_url):
        return None
    path = token_path()
    with contextlib.suppress(OSError, UnicodeDecodeError, TokenError):
        return _read_private(path)
    return None
