"""Child processes that cannot outlive their parent: own process groups, readiness, and a reaper.

:class:`ChildProcess` runs a command in a new session (its own process group, out of reach of the
terminal's Ctrl-C, killable as a group) and waits for it to print ``ready``. :class:`Reaper` is a
small watchdog process holding the read end of a pipe that only the parent writes to: it learns
each child's process group as the child is spawned, and at EOF (the parent closed the pipe, or died,
even by SIGKILL) it kills every group still alive. No ``prctl`` needed, so it works anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["ChildError", "ChildProcess", "Reaper", "reap_on_eof"]


class ChildError(RuntimeError):
    """A child did not start or did not become ready; the message quotes its stderr's tail."""


class ChildProcess:
    """A ``pcache`` subcommand run as a child in its own process group, ready when it says so.

    Its stdout lines before ``ready`` are returned by :meth:`wait_ready`; stderr goes to a file
    whose tail is quoted when the child fails.
    """

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.args = list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
        self.log_path = log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.strip().splitlines()[-lines:])

    async def spawn(self) -> int:
        """Start the process (in a new session, so in its own process group); returns its pid."""
        self._log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            start_new_session=True,  # own process group: no terminal Ctrl-C, killable as a group
        )
        return self.process.pid

    async def wait_ready(self, timeout_s: float = 30.0) -> list[str]:
        """Wait for ``ready`` on stdout; returns the lines printed before it."""
        assert self.process is not None and self.process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), max(remaining, 0.001))
            except TimeoutError:
                raise ChildError(f"{self.name} not ready after {timeout_s:.0f}s: {self.log_tail()}") from None
            if not raw:
                await self.process.wait()
                raise ChildError(
                    f"{self.name} exited (code {self.process.returncode}) before ready: {self.log_tail()}"
                )
            line = raw.decode("utf-8", "replace").strip()
            if line == "ready":
                break
            lines.append(line)
        self._drain = asyncio.create_task(self._drain_stdout())
        return lines

    async def _drain_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; safe to call twice."""
        process = self.process
        if process is not None:
            if process.returncode is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), grace_s)
                except TimeoutError:
                    _signal_group(process.pid, signal.SIGKILL)
                    await process.wait()
            _signal_group(process.pid, signal.SIGKILL)  # grandchildren, if any were left
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        if self._log is not None:
            self._log.close()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap_on_eof(stream: IO[str] | None = None, grace_s: float = 3.0) -> None:
    """The reaper's main: read process-group ids, one a line; at EOF, kill every group still alive.

    EOF means the demo closed its end of the pipe: normally after stopping its children itself, or
    because it died (even by SIGKILL), in which case the reaper is what stops them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups = [int(line) for line in (stream or sys.stdin) if line.strip().isdigit()]
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(pgid) for pgid in groups):
        time.sleep(0.05)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Reaper:
    """The reaper process and the write end of its pipe: ``watch(pid)`` each child as it spawns."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from pcache.supervisor import reap_on_eof; reap_on_eof()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )

    def watch(self, pid: int) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.write(f"{pid}\n".encode())

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
