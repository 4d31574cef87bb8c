"""`pcache status --watch` on a real pseudo-terminal: Ctrl-C leaves the last frame once, no ``^C``."""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import time

import pytest

from pcache.testing.ports import free_port

pty = pytest.importorskip("pty")


def _read_until(fd: int, wanted: bytes, deadline: float) -> bytes:
    """Everything the child printed, up to and including ``wanted`` (or EOF / the deadline)."""
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            return seen
        if not chunk:
            return seen
        seen += chunk
        if wanted and wanted in seen:
            return seen
    raise AssertionError(f"no {wanted!r} within the deadline; got {seen[-500:]!r}")


def test_ctrl_c_in_watch_mode_prints_no_caret_c_and_restores_the_terminal() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the pseudo-terminal
        os.environ.update({"COLUMNS": "100", "LINES": "30", "PCACHE_CONFIG": "", "NO_COLOR": "1"})
        os.execvp(
            sys.executable, [sys.executable, "-m", "pcache_cli.main", "status", "--replicas", dead, "-w"]
        )
    deadline = time.monotonic() + 120  # a cold start on a busy 2-core machine
    status: int | None = None
    try:
        before = _read_until(fd, b"ConnectError", deadline)  # the first frame is on screen
        os.write(fd, b"\x03")  # Ctrl-C, typed at the terminal
        after = _read_until(fd, b"", deadline)
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # not reaped: the child is still ours to stop
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, after[-500:])
    assert b"^C" not in before + after
    assert termios.tcgetattr(fd)[3] & termios.ECHOCTL  # echo of control characters is back
