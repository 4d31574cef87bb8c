"""Terminal details for the refreshing views (``status --watch``, ``events --watch``).

When Ctrl-C is pressed the terminal itself echoes ``^C`` at the cursor, which sits at the end of
the last line of the live frame. If that line is full, the echo wraps onto a new line; rich's Live
then erases one line too few when it redraws the final frame, and the frame's top line is left on
screen twice. :func:`quiet_interrupts` turns that echo off (as htop and watch do) while the view
runs, and restores the terminal afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_interrupts"]


@contextmanager
def quiet_interrupts() -> Iterator[None]:
    """Ctrl-C still interrupts, but the terminal prints no ``^C``; a no-op off a terminal."""
    try:
        import termios
    except ImportError:  # not a POSIX terminal
        yield
        return
    stream = sys.stdin
    if not stream.isatty():
        yield
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    quiet = list(saved)
    quiet[3] = saved[3] & ~termios.ECHOCTL  # lflag
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
