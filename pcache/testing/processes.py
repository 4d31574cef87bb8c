"""Stopping a test server that runs in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess

__all__ = ["stop_group"]


def stop_group(process: subprocess.Popen[bytes] | None, term_s: float = 10.0, kill_s: float = 5.0) -> None:
    """SIGTERM the process's whole group, then SIGKILL it if it has not exited after ``term_s``."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(term_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(kill_s)
