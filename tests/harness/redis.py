"""``RedisServer``: a real ``redis-server`` (Debian's package) on a free loopback port, for tests.

    with RedisServer(tmp_path) as redis:
        redis.url          # "redis://127.0.0.1:41234/0"
        redis.stop(); redis.start()   # an outage; the append-only file keeps the data across it

The server runs in its own process group with its data (AOF) in ``directory``; tests that need it
skip with a reason when the binary is missing (``.ci/run`` installs it, failing CI if it cannot).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from pcache.testing.processes import stop_group
from tests.harness.ports import free_port

__all__ = ["RedisServer", "require_redis_server"]


def require_redis_server() -> str:
    """The ``redis-server`` binary, or a skip naming how to get it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server; .ci/run does)")
    return binary


class RedisServer:
    """One ``redis-server`` process; ``start`` again after ``stop`` keeps the port and the data."""

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        self.binary = require_redis_server()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
