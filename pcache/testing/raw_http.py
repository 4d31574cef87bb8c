"""Raw HTTP/1.x exchanges for attacks that client libraries would tidy up (``curl --path-as-is``)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

__all__ = ["RawResponse", "raw_request"]


class RawResponse:
    """A parsed response: status, lower-cased headers, body bytes."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def __repr__(self) -> str:
        return f"<{self.status_line} {self.headers} {self.body[:300]!r}>"


def raw_request(
    base_url: str,
    target: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
    timeout_s: float = 30.0,
) -> RawResponse:
    """Send ``method target version`` exactly as given and read the answer until the server closes."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    lines = [f"{method} {target} {version}", f"Host: {parts.hostname}:{parts.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return RawResponse(b"".join(chunks))
