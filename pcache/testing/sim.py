"""``SimFleet``: the simulator (``python -m pcache.sim``) as a real subprocess on free loopback ports,
for tests and benchmarks.

    with SimFleet(replicas=2, num_gpu_blocks=64) as fleet:
        fleet.urls            # {"r1": "http://127.0.0.1:41233", "r2": ...}
        fleet.set_faults("r1", error_rate=1.0)
        fleet.metrics("r2")   # Prometheus text

Keyword options become its flags (``num_gpu_blocks=64`` -> ``--num-gpu-blocks 64``).
``async with SimFleet(...)`` works too (start and stop run in a thread, off the event loop).
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from pcache.testing.http import expect_ok

__all__ = ["SimFleet", "SimFleetError"]


class SimFleetError(RuntimeError):
    """The simulator did not start (its stderr is in the message)."""


def _pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Forward the simulator's stdout lines (and keep draining it so the pipe never fills)."""
    for line in stream:
        lines.put(line)
    lines.put(None)


class SimFleet:
    """A ``python -m pcache.sim`` subprocess; ``.urls`` maps replica names to base URLs once started."""

    def __init__(
        self,
        replicas: int | None = 1,
        *,
        config: str | Path | None = None,
        startup_timeout: float = 60.0,  # a start can take tens of seconds on a loaded machine
        extra_args: tuple[str, ...] = (),
        **options: Any,
    ) -> None:
        args = [sys.executable, "-m", "pcache.sim", "--base-port", "0"]
        if replicas is not None:
            args += ["--replicas", str(replicas)]
        if config is not None:
            args += ["--config", str(config)]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.args = [*args, *extra_args]
        self.startup_timeout = startup_timeout
        self.urls: dict[str, str] = {}
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._stderr_text = ""
        self._reader: threading.Thread | None = None

    def __enter__(self) -> SimFleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SimFleet:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Start the process and wait for its ``ready`` line (or fail with its stderr)."""
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=_pump_lines, args=(self.process.stdout, lines), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.0)) if remaining > 0 else None
            except queue.Empty:
                line = None
                remaining = 0
            if line is None:
                self.stop()
                state = "exited before ready" if remaining > 0 else f"not ready after {self.startup_timeout}s"
                raise SimFleetError(f"pcache sim {state}: {self.stderr}")
            words = line.split()
            if words == ["ready"]:
                return
            if len(words) == 3 and words[0] == "replica":
                self.urls[words[1]] = words[2]

    @property
    def stderr(self) -> str:
        """What the simulator wrote on stderr so far."""
        if self._stderr is None or self._stderr.closed:
            return self._stderr_text
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait for a clean exit (kill after ``timeout``); returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout)  # ends at EOF, now that the process is gone
        if process.stdout is not None and (self._reader is None or not self._reader.is_alive()):
            process.stdout.close()
        if self._stderr is not None and not self._stderr.closed:
            self._stderr_text = self.stderr
            self._stderr.close()
        return process.returncode

    @property
    def returncode(self) -> int | None:
        """The exit code once the process ended."""
        return None if self.process is None else self.process.poll()

    def url(self, name: str = "r1") -> str:
        """Base URL of one replica."""
        return self.urls[name]

    def set_faults(self, name: str = "r1", **changes: Any) -> dict[str, Any]:
        """``POST /sim/faults`` on one replica; returns the replica's fault state."""
        response = expect_ok(httpx.post(f"{self.urls[name]}/sim/faults", json=changes, timeout=10))
        state: dict[str, Any] = response.json()
        return state

    def metrics(self, name: str = "r1") -> str:
        """One replica's ``/metrics`` text."""
        return expect_ok(httpx.get(f"{self.urls[name]}/metrics", timeout=10)).text
