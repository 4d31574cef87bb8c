"""Shared CLI plumbing: exit codes and the one-line error report."""

from __future__ import annotations

import sys
from enum import IntEnum
from typing import NoReturn

import typer

__all__ = ["ExitCode", "fail", "info"]


class ExitCode(IntEnum):
    """kubectl-style exit codes, the same for every command."""

    OK = 0
    FAILED = 1  # refused or failed
    USAGE = 2
    UNREACHABLE = 3  # router unreachable
    TIMEOUT = 4
    PARTIAL = 5


def info(message: str) -> None:
    """A human message: always stderr, so stdout carries only data."""
    print(message, file=sys.stderr)


def fail(message: str, code: ExitCode = ExitCode.FAILED) -> NoReturn:
    """Print one readable line on stderr and exit with ``code`` (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(int(code))
