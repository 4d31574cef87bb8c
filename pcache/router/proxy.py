"""The data plane: a raw ASGI app that fingerprints, routes and forwards OpenAI requests.

``/v1/chat/completions`` and ``/v1/completions`` are parsed once, routed by the policy and
forwarded with the client's headers minus hop-by-hop ones. Streams pass through chunk by chunk; the
response head is held back until the first upstream byte so that a replica failing before it can be
retried on the decision's next candidate (``upstream.retries`` extra attempts; after a read timeout
only with ``upstream.retry_on_timeout``). A failure after bytes reached the client ends an SSE
stream with an OpenAI-style error event. Non-streamed bodies
are small and read whole (which also lets a mid-body failure be retried). ``/v1/models`` merges the
replicas' lists; other ``/v1/*`` paths go to a policy-chosen replica. Responses carry
``x-pcache-replica`` and ``x-pcache-reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from pcache.fingerprint import Fingerprint
from pcache.fleet import Fleet
from pcache.policy.base import Decision, Exclusion, Outcome
from pcache.prompt import bounded_session_key
from pcache.router.metrics import CONTENT_TYPE, RouterMetrics
from pcache.router.offload import BodyError, RequestParser
from pcache.router.outlier import OutlierDetector
from pcache.router.paths import COMPLETION_PATHS, MODELS_PATH, api_path
from pcache.router.routing import Routing
from pcache.router.upstream import Upstream, UpstreamError, UpstreamResponse

__all__ = ["ProxyApp", "error_body"]

log = logging.getLogger("pcache.router.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# A retry may go where the policy would rather not send new work: a busy or non-owner replica that is
# healthy beats an error. State exclusions (unhealthy, draining...) and pins/groups stay binding.
_RETRY_DESPITE = frozenset({Exclusion.OVER_LOAD_BOUND, Exclusion.NOT_OWNER})
_MAX_HEADER_BYTES = 64 * 1024  # request headers in total; the ASGI server itself sets no limit
_MAX_HEADERS = 256
_JSON = [(b"content-type", b"application/json")]


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """An OpenAI-style error envelope."""
    return json.dumps({"error": {"message": message, "type": type_, "code": code, "param": param}}).encode()


async def _send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _TooLarge(Exception):
    pass


async def _read_body(scope: Scope, receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole request body; raises _TooLarge past ``limit`` and TimeoutError when the client
    sends nothing for ``timeout_s`` (a slow or stalled body must not hold the connection)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        async with asyncio.timeout(timeout_s):
            message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _connection_named(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in ``Connection:`` (hop-by-hop by declaration, RFC 9110 7.6.1)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named)


def _forward_headers(scope: Scope) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """Headers to send upstream, and a str view of the client's headers for fingerprinting."""
    forward: list[tuple[bytes, bytes]] = []
    plain: dict[str, str] = {}
    named = _connection_named(scope["headers"])
    for name, value in scope["headers"]:
        plain[name.decode("latin-1")] = value.decode("latin-1")
        if name not in _HOP_BY_HOP and name not in named:
            forward.append((name, value))
    return forward, plain


def _response_headers(
    upstream: list[tuple[bytes, bytes]],
    decision_headers: list[tuple[bytes, bytes]],
    length: int | None,
    replica_url: bytes = b"",
) -> list[tuple[bytes, bytes]]:
    """The replica's headers minus hop-by-hop ones; a ``Location`` on the replica itself is made
    relative so a redirect never shows a client the replica's internal address."""
    named = _connection_named(upstream)
    headers = []
    for name, value in upstream:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP or lowered in named:
            continue
        if lowered == b"location" and replica_url and value.startswith(replica_url):
            value = value[len(replica_url) :] or b"/"
        headers.append((name, value))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.extend(decision_headers)
    return headers


def _usage_of(payload: object) -> tuple[int | None, int | None]:
    """(prompt_tokens, cached_tokens) from a response's usage, when present."""
    if not isinstance(payload, dict):
        return None, None
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens")
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return (prompt if isinstance(prompt, int) else None, cached if isinstance(cached, int) else None)


def _all_failed(kinds: set[str]) -> tuple[int, str, str]:
    """Status, type and code when every attempt failed before the client saw a byte: 503 when no
    replica could even be reached, 504 when one timed out, 502 when they answered badly."""
    if kinds <= {"connect"}:
        return 503, "service_unavailable", "no_replica_reachable"
    if "timeout" in kinds:
        return 504, "upstream_error", "upstream_timeout"
    return 502, "upstream_error", "upstream_failed"


class _Prefill:
    """Prompt tokens an attempt still has to prefill on its replica; released exactly once, at the
    first upstream byte or when the attempt ends, so ``ReplicaView.pending_tokens`` tracks queues."""

    __slots__ = ("fleet", "replica", "tokens")

    def __init__(self, fleet: Fleet, replica: str, tokens: int) -> None:
        self.fleet = fleet
        self.replica = replica
        self.tokens = tokens

    def release(self) -> None:
        if self.tokens:
            self.fleet.prefilled(self.replica, self.tokens)
            self.tokens = 0


class _ClientWatch:
    """Cancels the request's task when its client disconnects, until disarmed.

    Once the request body is read, the next ``receive()`` returns only when the client goes away.
    Cancelling the task from there interrupts whatever it awaits (connecting, waiting for the
    replica's first byte, reading a body), and the ``finally`` blocks close the upstream connection,
    which is how vLLM and SGLang learn to abort the generation. Disarmed before the last message is
    sent, because after it ``receive()`` reports a disconnect by design.
    """

    __slots__ = ("_armed", "_future", "_task", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._armed = True
        self._task = asyncio.current_task()
        self._future = asyncio.ensure_future(receive())
        self._future.add_done_callback(self._message)

    def _message(self, future: asyncio.Future[Message]) -> None:
        if not self._armed or future.cancelled() or future.exception() is not None:
            return
        if future.result().get("type") == "http.disconnect" and self._task is not None:
            self.gone = True
            self._task.cancel()

    def disarm(self) -> None:
        self._armed = False

    def close(self) -> None:
        self._armed = False
        self._future.cancel()


@dataclass(slots=True)
class _Exchange:
    """One client request on its way to a replica: what every attempt needs to send and answer it."""

    method: str
    path: str  # normalised API path plus query string
    headers: list[tuple[bytes, bytes]]
    body: bytes
    send: Send
    stream: bool
    http10: bool  # no chunked encoding: answers need a length
    arrived: float
    watch: _ClientWatch


class _StreamUsage:
    """Finds the usage object in an SSE stream, parsing only complete events that mention it."""

    __slots__ = ("_tail", "cached_tokens", "prompt_tokens")

    _MAX_TAIL = 65536

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.cached_tokens: int | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data[-self._MAX_TAIL :]
            return
        complete = data[:end]
        self._tail = data[end + 2 :][-self._MAX_TAIL :]
        if b'"prompt_tokens"' not in complete:
            return
        for event in complete.split(b"\n\n"):
            line = event.strip()
            if b'"prompt_tokens"' not in line or not line.startswith(b"data:"):
                continue
            try:
                payload = orjson.loads(line[5:])
            except ValueError:
                continue
            prompt, cached = _usage_of(payload)
            if prompt is not None:
                self.prompt_tokens, self.cached_tokens = prompt, cached


class ProxyApp:
    """The data-plane ASGI application."""

    def __init__(
        self,
        *,
        routing: Routing,
        fleet: Fleet,
        upstream: Upstream,
        metrics: RouterMetrics,
        retries: int,
        max_body_bytes: int,
        max_response_bytes: int = 64 * 1024 * 1024,
        body_timeout_s: float = 30.0,
        retry_on_timeout: bool = False,
        api_keys: tuple[str, ...] = (),
        parser: RequestParser | None = None,
        outlier: OutlierDetector | None = None,
        on_metrics: Callable[[], None] | None = None,
        models_timeout_s: float = 5.0,
    ) -> None:
        self.routing = routing
        self.fleet = fleet
        self.upstream = upstream
        self.metrics = metrics
        self.retries = retries
        self.retry_on_timeout = retry_on_timeout
        self._api_keys = tuple(key.encode() for key in api_keys)
        self.max_body_bytes = max_body_bytes
        self.max_response_bytes = max_response_bytes
        self.body_timeout_s = body_timeout_s
        self.outlier = outlier
        self.parser = parser or RequestParser(threshold_bytes=max_body_bytes + 1)
        self._on_metrics = on_metrics
        self._models_timeout_s = models_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            elif scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        method: str = scope["method"]
        headers = scope["headers"]
        if len(headers) > _MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > _MAX_HEADER_BYTES:
            await self._error(
                send,
                431,
                "request headers are too large",
                "invalid_request_error",
                "request_headers_too_large",
            )
            return
        if any(name == b"upgrade" for name, _ in headers):
            self.metrics.count_response(400)
            message = "protocol upgrades (WebSocket, h2c) are not supported; send a plain HTTP request"
            body = error_body(message, "invalid_request_error", "upgrade_not_supported")
            await _send_json(send, 400, body, [(b"connection", b"close")])
            return
        try:
            if raw_path == b"/metrics" and method == "GET":
                await self._metrics(send)
                return
            if raw_path in (b"/health", b"/healthz"):
                await _send_json(send, 200, b'{"status":"ok"}')
                return
            path = api_path(raw_path)
            if path is None:
                shown = raw_path.decode("latin-1")[:200]
                await self._error(send, 404, f"unknown path {shown}", "invalid_request_error", "not_found")
                return
            if self._api_keys and not self._authorized(headers):
                await self._error(
                    send, 401, "missing or invalid API key", "invalid_request_error", "invalid_api_key"
                )
                return
            if path in COMPLETION_PATHS:
                if method != "POST":
                    await self._error(send, 405, f"{method} not allowed on {path}", "invalid_request_error")
                    return
                await self._completion(scope, receive, send, path)
            elif path == MODELS_PATH:
                if method != "GET":
                    await self._error(send, 405, f"{method} not allowed on {path}", "invalid_request_error")
                    return
                await self._models(send)
            else:
                await self._passthrough(scope, receive, send, path)
        except ConnectionAbortedError:
            return

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """A bearer token equal to one of the API keys (constant-time, every key compared)."""
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                token = token.strip()
                return any([hmac.compare_digest(token, key) for key in self._api_keys])
        return False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _error(
        self, send: Send, status: int, message: str, type_: str, code: str | None = None
    ) -> None:
        self.metrics.count_response(status)
        await _send_json(send, status, error_body(message, type_, code))

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        try:
            return await _read_body(scope, receive, self.max_body_bytes, self.body_timeout_s)
        except TimeoutError:
            self.metrics.count_response(408)
            message = f"the request body did not arrive within {self.body_timeout_s:g} s"
            body = error_body(message, "invalid_request_error", "request_timeout")
            await _send_json(send, 408, body, [(b"connection", b"close")])
            return None
        except _TooLarge:
            await self._error(
                send,
                413,
                f"request body exceeds {self.max_body_bytes} bytes",
                "invalid_request_error",
                "request_too_large",
            )
            return None

    # ---- routed completions ---------------------------------------------------------------------

    async def _completion(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        arrived = time.perf_counter()
        body = await self._body(scope, receive, send)
        if body is None:
            return
        headers, plain = _forward_headers(scope)
        try:
            fingerprint, payload, stream = await self.parser.parse(
                body, plain, self.routing.config, self.routing.tier1_index
            )
        except BodyError as exc:
            await self._error(send, 400, str(exc), "invalid_request_error", exc.code)
            return
        if payload is not None:  # a large body parsed in the worker has no token ids
            fingerprint = await self.routing.with_engine_tokens(fingerprint, payload)
        decision = self.routing.route(fingerprint)
        await self._forward(scope, receive, send, path, headers, body, decision, fingerprint, stream, arrived)

    async def _passthrough(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        arrived = time.perf_counter()
        body = await self._body(scope, receive, send)
        if body is None:
            return
        headers, plain = _forward_headers(scope)
        session = plain.get(self.routing.config.session_header.lower())
        key = bounded_session_key(session) if session else None
        fingerprint = Fingerprint(blocks=(), session=key, prompt_tokens=0)
        decision = self.routing.route(fingerprint)
        # Unknown endpoints may stream: pass every successful body through as it arrives.
        await self._forward(scope, receive, send, path, headers, body, decision, fingerprint, True, arrived)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        api: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        decision: Decision,
        fingerprint: Fingerprint,
        stream: bool,
        arrived: float,
    ) -> None:
        if decision.replica is None:
            await self._error(
                send,
                503,
                "no replica is available to serve this request",
                "service_unavailable",
                "no_replica",
            )
            return
        query: bytes = scope.get("query_string") or b""
        exchange = _Exchange(
            method=scope["method"],
            path=api + "?" + query.decode("latin-1") if query else api,
            headers=headers,
            body=body,
            send=send,
            # HTTP/1.0 has no chunked encoding: such a client gets the whole (capped) body.
            stream=stream and scope.get("http_version") != "1.0",
            http10=scope.get("http_version") == "1.0",
            arrived=arrived,
            watch=_ClientWatch(receive),
        )
        try:
            await self._attempts(exchange, decision, fingerprint)
        except asyncio.CancelledError:
            if not exchange.watch.gone:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            log.info("client went away before its response was complete; upstream request cancelled")
            self.metrics.count_response(499)
            self.routing.observe(fingerprint, decision, Outcome(replica=decision.replica, ok=False))
        finally:
            exchange.watch.close()

    async def _attempts(self, exchange: _Exchange, decision: Decision, fingerprint: Fingerprint) -> None:
        """Try the decision's replica, then its fallbacks, until one answers the client."""
        assert decision.replica is not None
        spill = [c.replica for c in decision.candidates if c.excluded in _RETRY_DESPITE]
        attempts = [decision.replica, *[*decision.fallbacks(), *spill][: self.retries]]
        last_error = "no attempt made"
        kinds: set[str] = set()
        for number, replica in enumerate(attempts):
            if number:
                self.metrics.count_retry(attempts[number - 1])
            if replica not in self.fleet:
                continue
            is_last = number == len(attempts) - 1
            decision_headers = [
                (b"x-pcache-replica", replica.encode()),
                (b"x-pcache-reason", (decision.reason.value if number == 0 else "retry").encode()),
                (
                    b"x-pcache-predicted-cached-tokens",
                    str(self.routing.predicted_tokens(fingerprint, decision, replica)).encode(),
                ),
            ]
            cached = decision.predicted_cached_blocks if replica == decision.replica else 0
            prefill = _Prefill(self.fleet, replica, fingerprint.prompt_tokens - fingerprint.tokens_in(cached))
            self.fleet.begin(replica, prefill.tokens)
            try:
                outcome = await self._attempt(exchange, replica, is_last, decision_headers, prefill)
            except UpstreamError as exc:
                last_error = str(exc)
                kinds.add(exc.kind)
                if exc.kind == "timeout" and not self.retry_on_timeout:
                    # The replica may still be running it: a retry would run it twice and make the
                    # client wait a multiple of the configured limit. Time out at the limit.
                    break
                continue
            finally:
                prefill.release()
                self.fleet.end(replica)
            self.routing.observe(fingerprint, decision, outcome)
            return
        log.warning("all %d attempts failed; last error: %s", len(attempts), last_error)
        self.routing.observe(fingerprint, decision, Outcome(replica=decision.replica, ok=False))
        status, type_, code = _all_failed(kinds)
        exchange.watch.disarm()
        await self._error(
            exchange.send,
            status,
            f"no replica could serve the request after {len(attempts)} attempt(s): {last_error}",
            type_,
            code,
        )

    async def _attempt(
        self,
        exchange: _Exchange,
        replica: str,
        is_last: bool,
        decision_headers: list[tuple[bytes, bytes]],
        prefill: _Prefill,
    ) -> Outcome:
        """One try on one replica. Raises UpstreamError if nothing reached the client (retryable)."""
        base = self.fleet.url(replica)
        try:
            response = await self.upstream.open(
                exchange.method, base + exchange.path, exchange.headers, exchange.body
            )
        except UpstreamError as exc:
            self._failed(replica, "connect", str(exc))
            raise
        try:
            if response.status in _RETRYABLE_STATUS and not is_last:
                self._failed(replica, "status", f"HTTP {response.status}")
                raise UpstreamError(f"{replica} answered HTTP {response.status}", "status")
            head = _response_headers(response.headers, decision_headers, None, base.encode())
            if exchange.stream and response.status == 200:
                return await self._stream(exchange, replica, response, head, prefill)
            return await self._whole(exchange, replica, response, head, prefill)
        finally:
            await response.close()

    def _failed(self, replica: str, kind: str, error: str, *, mid_stream: bool = False) -> None:
        self.metrics.count_upstream_error(replica, kind, mid_stream=mid_stream)
        if self.fleet.report_failure(replica, error):
            log.warning("replica %s marked unhealthy after proxied failures: %s", replica, error)
        self._outlier_failure(replica, error)

    def _outlier_failure(self, replica: str, error: str) -> None:
        if self.outlier is None or replica not in self.fleet:
            return
        ejection = self.outlier.failure(replica, error, len(self.fleet.entries()))
        if ejection is not None:
            self.fleet.eject(replica, ejection.seconds, f"ejected for {ejection.seconds:g} s: {error}")
            self.metrics.outlier_ejections.labels(replica).inc()
            log.warning(
                "replica %s ejected for %g s after %d failed requests in a row (last: %s)",
                replica,
                ejection.seconds,
                ejection.failures,
                error,
            )

    def _succeeded(self, replica: str) -> None:
        self.fleet.report_success(replica)
        if self.outlier is not None:
            self.outlier.success(replica)

    async def _whole(
        self,
        exchange: _Exchange,
        replica: str,
        response: UpstreamResponse,
        head: list[tuple[bytes, bytes]],
        prefill: _Prefill,
    ) -> Outcome:
        """Read a non-streamed answer whole (up to ``max_response_bytes``, so a failure mid-body can
        still be retried and its usage read), then send it with its length. A larger answer is
        passed through as it arrives instead of being buffered."""
        chunks: list[bytes] = []
        size = 0
        body = response.body()
        try:
            async for chunk in body:
                if not chunks:
                    prefill.release()
                    self.metrics.observe_ttfb(replica, time.perf_counter() - exchange.arrived)
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_response_bytes:
                    return await self._pass_through(exchange, replica, response, head, chunks, body)
        except UpstreamError as exc:
            self._failed(replica, "body", str(exc))
            raise
        content = b"".join(chunks)
        ok = response.status < 400
        prompt = cached = None
        if ok and content[:1] == b"{" and b'"usage"' in content:
            with contextlib.suppress(ValueError):
                prompt, cached = _usage_of(orjson.loads(content))
        if response.status < 500:
            self._succeeded(replica)
        else:  # the last candidate's error status, passed on: still a failure of that replica
            self._outlier_failure(replica, f"HTTP {response.status}")
        exchange.watch.disarm()
        head.append((b"content-length", str(len(content)).encode()))
        await exchange.send({"type": "http.response.start", "status": response.status, "headers": head})
        await exchange.send({"type": "http.response.body", "body": content, "more_body": False})
        self._finished(replica, response.status, exchange.arrived)
        return Outcome(replica=replica, ok=ok, cached_tokens=cached, prompt_tokens=prompt, ttft_s=None)

    async def _pass_through(
        self,
        exchange: _Exchange,
        replica: str,
        response: UpstreamResponse,
        head: list[tuple[bytes, bytes]],
        buffered: list[bytes],
        rest: AsyncIterator[bytes],
    ) -> Outcome:
        """Send an oversized non-streamed answer on as it arrives (its usage is not read)."""
        length = next((v for k, v in response.headers if k.lower() == b"content-length"), None)
        if length is not None:
            head.append((b"content-length", length))
        elif exchange.http10:
            self._failed(replica, "body", "answer too large to buffer for an HTTP/1.0 client")
            raise UpstreamError(f"{replica}'s answer exceeds {self.max_response_bytes} bytes", "body")
        send = exchange.send
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        await send({"type": "http.response.body", "body": b"".join(buffered), "more_body": True})
        try:
            async for chunk in rest:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            self._failed(replica, "body", str(exc))
            raise ConnectionAbortedError from exc  # the head is out: all that is left is to cut
        exchange.watch.disarm()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if response.status < 500:
            self._succeeded(replica)
        self._finished(replica, response.status, exchange.arrived)
        return Outcome(replica=replica, ok=response.status < 400, ttft_s=None)

    async def _stream(
        self,
        exchange: _Exchange,
        replica: str,
        response: UpstreamResponse,
        head: list[tuple[bytes, bytes]],
        prefill: _Prefill,
    ) -> Outcome:
        usage = _StreamUsage()
        started = False
        ttfb: float | None = None
        send = exchange.send
        try:
            async for chunk in response.body():
                if not started:
                    prefill.release()
                    ttfb = time.perf_counter() - exchange.arrived
                    self.metrics.observe_ttfb(replica, ttfb)
                    await send({"type": "http.response.start", "status": response.status, "headers": head})
                    started = True
                usage.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            self._failed(replica, "stream", str(exc), mid_stream=started)
            if not started:
                raise
            event = error_body(
                f"replica {replica} failed mid-stream: {exc}", "upstream_error", "upstream_disconnected"
            )
            exchange.watch.disarm()
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            self._finished(replica, 502, exchange.arrived, mid_stream=True)
            return Outcome(replica=replica, ok=False, ttft_s=ttfb)
        exchange.watch.disarm()
        if not started:
            await send({"type": "http.response.start", "status": response.status, "headers": head})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._succeeded(replica)
        self._finished(replica, response.status, exchange.arrived)
        return Outcome(
            replica=replica,
            ok=True,
            cached_tokens=usage.cached_tokens,
            prompt_tokens=usage.prompt_tokens,
            ttft_s=ttfb,
        )

    def _finished(self, replica: str, status: int, arrived: float, *, mid_stream: bool = False) -> None:
        self.metrics.observe_duration(replica, time.perf_counter() - arrived)
        self.metrics.count_response(status, replica, mid_stream=mid_stream)

    # ---- other endpoints ------------------------------------------------------------------------

    async def _models(self, send: Send) -> None:
        """The union of the routable replicas' model lists (by id, first seen wins)."""
        names = self.fleet.routable_names()
        results = await asyncio.gather(
            *(self.upstream.fetch(self.fleet.url(n) + "/v1/models", self._models_timeout_s) for n in names),
            return_exceptions=True,
        )
        models: dict[str, object] = {}
        for result in results:
            if isinstance(result, BaseException) or result.status != 200:
                continue
            try:
                data = json.loads(result.body).get("data", [])
            except (ValueError, AttributeError):
                continue
            for model in data if isinstance(data, list) else []:
                if isinstance(model, dict) and isinstance(model.get("id"), str):
                    models.setdefault(model["id"], model)
        if not models and names:
            await self._error(
                send, 502, "no replica answered /v1/models", "upstream_error", "upstream_failed"
            )
            return
        if not names:
            await self._error(send, 503, "no replica is available", "service_unavailable", "no_replica")
            return
        body = json.dumps({"object": "list", "data": list(models.values())}).encode()
        await _send_json(send, 200, body)

    async def _metrics(self, send: Send) -> None:
        if self._on_metrics is not None:
            self._on_metrics()
        body = self.metrics.exposition()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
