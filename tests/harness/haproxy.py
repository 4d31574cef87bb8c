"""``HAProxy``: a real ``haproxy`` (Debian's package) in front of routers, for tests and benchmarks.

    with HAProxy({"a": router_a.url, "b": router_b.url}, tmp_path) as lb:
        httpx.post(f"{lb.url}/v1/chat/completions", ...)

Round-robin over the routers with an HTTP health check on ``/health``, and layer-7 retries on
another router when a connection fails or a router dies before its first byte (``retry-on
conn-failure empty-response response-timeout`` with ``option redispatch``): what a production
deployment in front of pcache's routers should do (``docs/deploying.md``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import pytest

from pcache.testing.processes import stop_group
from tests.harness.ports import free_port

__all__ = ["HAProxy", "haproxy_config", "require_haproxy"]


def require_haproxy() -> str:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy not installed (apt-get install haproxy; .ci/run does)")
    return binary


def haproxy_config(routers: Mapping[str, str], port: int) -> str:
    """The configuration: one frontend on ``port``, the routers' data planes as the backend."""
    servers = "\n".join(
        f"    server {name} {url.removeprefix('http://')} check inter 200ms fall 2 rise 1"
        for name, url in routers.items()
    )
    return f"""global
    maxconn 4096
    tune.bufsize 65536

defaults
    mode http
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 10s
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend pcache
    bind 127.0.0.1:{port}
    default_backend routers

backend routers
    balance roundrobin
    option httpchk GET /health
{servers}
"""


class HAProxy:
    """One ``haproxy`` process in the foreground, in its own process group."""

    def __init__(self, routers: Mapping[str, str], directory: str | os.PathLike[str]) -> None:
        self.binary = require_haproxy()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.directory / "haproxy.cfg"
        self.config_path.write_text(haproxy_config(routers, self.port))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> HAProxy:
        log = (self.directory / "haproxy.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = (self.directory / "haproxy.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"haproxy did not start on port {self.port}:\n{text}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
