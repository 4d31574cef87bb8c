"""One log line per process for uvicorn's process-level messages.

The router runs two uvicorn servers in one process (the data plane and the admin API). Each logs
"Started server process [PID]", "Shutting down" and "Finished server process [PID]" to the same
``uvicorn.error`` logger, so every such line appeared twice. :class:`OncePerProcess` drops an INFO
record identical (message and arguments) to one already let through within ``window_s``; warnings
and errors always pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["OncePerProcess", "install"]


class OncePerProcess(logging.Filter):
    """Let an INFO line through once when both listeners log it at (nearly) the same moment."""

    def __init__(self, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        key = (str(record.msg), repr(record.args))
        now = self.clock()
        last = self._seen.get(key)
        self._seen = {k: t for k, t in self._seen.items() if now - t < self.window_s}  # stays small
        if last is not None and now - last < self.window_s:
            return False
        self._seen[key] = now
        return True


def install() -> None:
    """Add the filter to uvicorn's server logger (once, however often the router starts)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OncePerProcess) for f in logger.filters):
        logger.addFilter(OncePerProcess())
