"""The pooled HTTP client for the hop to the replicas, in two interchangeable implementations.

:class:`AiohttpUpstream` and :class:`HttpxUpstream` share one small interface (:class:`Upstream`):
``open`` sends a request and returns once the response head has arrived, ``body`` streams raw bytes
as they come (never decoded, never buffered), ``fetch`` is a small GET for health checks and scrapes.
Redirects are never followed. ``bench/proxy.py`` measures both; the config picks one. Failures before
a response head are raised as :class:`UpstreamError` so the proxy can retry on another replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import httpx
import orjson
from multidict import CIMultiDict

__all__ = [
    "FETCH_MAX_BYTES",
    "AiohttpUpstream",
    "FetchResult",
    "HttpxUpstream",
    "Upstream",
    "UpstreamError",
    "UpstreamResponse",
    "make_upstream",
]


# Every JSON body the router originates (prewarms, handover prewarms) is labelled: vLLM refuses a
# JSON POST without it (HTTP 400 "Unsupported Media Type").
_JSON_HEADERS = {"content-type": "application/json"}


class UpstreamError(Exception):
    """The replica could not be reached or stopped answering.

    ``kind`` says how: ``connect`` (refused, reset or unreachable before any answer), ``timeout``
    (no answer within the configured limit), ``status`` (a retryable error status) or ``body`` (the
    answer broke off).
    """

    def __init__(self, message: str, kind: str = "connect") -> None:
        super().__init__(message)
        self.kind = kind


def _failure(exc: BaseException, kind: str) -> UpstreamError:
    """An UpstreamError for a client library's exception; timeouts are told apart from ``kind``."""
    timed_out = isinstance(exc, (TimeoutError, httpx.TimeoutException))
    return UpstreamError(str(exc) or type(exc).__name__, "timeout" if timed_out else kind)


FETCH_MAX_BYTES = 8 * 1024 * 1024
"""The most a health check, model list or scrape may return: a replica's /metrics is ~100 KB, and a
50 MB one cost 15 s of parsing per scrape."""


async def _bounded(chunks: AsyncIterator[bytes], max_bytes: int, url: str) -> bytes:
    """Read ``chunks`` whole, refusing more than ``max_bytes`` (raised as an UpstreamError)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise UpstreamError(f"{url} answered more than {max_bytes} bytes", "body")
        parts.append(chunk)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class FetchResult:
    status: int
    body: bytes


class UpstreamResponse(Protocol):
    """An open response: head received, body not yet read."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def body(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive; raises :class:`UpstreamError` if the replica fails."""
        ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    async def open(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse: ...

    async def fetch(self, url: str, timeout_s: float, max_bytes: int = FETCH_MAX_BYTES) -> FetchResult: ...

    async def post_json(self, url: str, payload: dict[str, Any], timeout_s: float) -> FetchResult: ...

    async def aclose(self) -> None: ...


# ---- httpx --------------------------------------------------------------------------------------


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = list(response.headers.raw)

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise _failure(exc, "body") from exc

    async def close(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    """httpx.AsyncClient with keep-alive pooling over HTTP/1.1."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(
            timeout=timeout, limits=limits, follow_redirects=False, transport=transport
        )

    async def open(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        request = self._client.build_request(method, url, headers=list(headers), content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _failure(exc, "connect") from exc
        return _HttpxResponse(response)

    async def fetch(self, url: str, timeout_s: float, max_bytes: int = FETCH_MAX_BYTES) -> FetchResult:
        try:
            async with self._client.stream("GET", url, timeout=timeout_s) as response:
                body = await _bounded(response.aiter_bytes(), max_bytes, url)
        except httpx.HTTPError as exc:
            raise _failure(exc, "connect") from exc
        return FetchResult(response.status_code, body)

    async def post_json(self, url: str, payload: dict[str, Any], timeout_s: float) -> FetchResult:
        try:
            response = await self._client.post(
                url, content=orjson.dumps(payload), headers=_JSON_HEADERS, timeout=timeout_s
            )
        except httpx.HTTPError as exc:
            raise _failure(exc, "connect") from exc
        return FetchResult(response.status_code, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


# ---- aiohttp ------------------------------------------------------------------------------------

_AIOHTTP_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = list(response.raw_headers)

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _AIOHTTP_ERRORS as exc:
            raise _failure(exc, "body") from exc

    async def close(self) -> None:
        # An answer not read to its end closes its connection (so the replica sees the client go).
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpUpstream:
    """aiohttp.ClientSession with a pooled TCPConnector; bodies are passed through undecoded."""

    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp binds the session to the running loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def open(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        plain = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
        try:
            response = await self._client().request(
                method, url, headers=plain, data=body, allow_redirects=False
            )
        except _AIOHTTP_ERRORS as exc:
            raise _failure(exc, "connect") from exc
        return _AiohttpResponse(response)

    async def _simple(
        self,
        method: str,
        url: str,
        timeout_s: float,
        body: bytes | None = None,
        *,
        max_bytes: int = FETCH_MAX_BYTES,
    ) -> FetchResult:
        # The session skips aiohttp's automatic Content-Type (proxied requests keep the client's own),
        # so a body the router writes itself names its type here.
        headers = _JSON_HEADERS if body is not None else None
        try:
            async with self._client().request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                return FetchResult(
                    response.status, await _bounded(response.content.iter_any(), max_bytes, url)
                )
        except _AIOHTTP_ERRORS as exc:
            raise _failure(exc, "connect") from exc

    async def fetch(self, url: str, timeout_s: float, max_bytes: int = FETCH_MAX_BYTES) -> FetchResult:
        return await self._simple("GET", url, timeout_s, max_bytes=max_bytes)

    async def post_json(self, url: str, payload: dict[str, Any], timeout_s: float) -> FetchResult:
        return await self._simple("POST", url, timeout_s, orjson.dumps(payload))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_upstream(
    kind: Literal["httpx", "aiohttp"],
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_connections: int,
) -> Upstream:
    """Build the configured upstream client."""
    if kind == "aiohttp":
        return AiohttpUpstream(
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_connections=max_connections,
        )
    return HttpxUpstream(
        connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s, max_connections=max_connections
    )
