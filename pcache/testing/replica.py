"""A recording fake replica for attacks: which paths reached it, and which clients hung up on it.

A ``ThreadingHTTPServer`` on a free loopback port. It answers ``/health`` and ``/metrics`` (so the
router's watcher keeps it healthy) and, for everything else, records the request line and answers
with a small OpenAI-shaped JSON body (or ``answer``, or ``status`` with an error body; ``health_status`` for
``/health``), or, with ``hold=True``, never answers and records when the
router closed the connection (how a real engine learns that its client went away).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import ClassVar

__all__ = ["RecordingReplica"]

_ANSWER = (
    b'{"id":"x","object":"chat.completion","model":"sim-model","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (the router refusing an answer, a cancelled request) are expected."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class RecordingReplica:
    """A replica that records every request line it receives (other than health and metrics)."""

    def __init__(
        self,
        *,
        hold: bool = False,
        metrics: bytes = b"",
        status: int = 200,
        health_status: int = 200,
        answer: bytes | None = None,
    ) -> None:
        self.hits: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.hung_up = threading.Event()
        self.received = threading.Event()
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            owner: ClassVar[RecordingReplica] = replica

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                if self.path == "/health":
                    self._answer(health_status, b"{}")
                    return
                if self.path == "/metrics":
                    self._answer(200, metrics)
                    return
                self.owner.hits.append(f"{self.command} {self.path}")
                self.owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.owner.received.set()
                if hold:
                    self.connection.settimeout(60)
                    if self.connection.recv(1) == b"":  # blocks until the peer closes
                        self.owner.hung_up.set()
                    return
                ok = answer if answer is not None else _ANSWER
                self._answer(status, ok if status == 200 else b'{"error":{"message":"broken"}}')

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> RecordingReplica:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
