"""``eventually``: poll a condition until it holds, for tests against live processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


def eventually(
    condition: Callable[[], T | Literal[False] | None],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call ``condition`` every ``interval_s`` until it returns something truthy, and return that;
    fail with an AssertionError naming ``what`` after ``timeout_s`` (30 s by default: generous,
    because it only costs time when something is wrong, and a loaded machine is slow).

    The falsy ``False`` and ``None`` are never returned, so ``eventually(lambda: ready and rows)``
    is typed as ``rows``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
    return value
