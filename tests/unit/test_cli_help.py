"""Every command's ``--help`` shows examples, and on/off flags show as flags (no ``<bool>`` value)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pcache_cli.main import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command: the leaves, and groups that act on their own (``pcache replicas``)."""
    subs: dict[str, Any] = getattr(command, "commands", {})
    if not subs or (path and command.invoke_without_command):
        yield path
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


COMMANDS = sorted(_commands(typer.main.get_command(app)))


def test_the_walk_finds_the_commands() -> None:
    expected = {("status",), ("drain",), ("replicas",), ("replicas", "add"), ("route", "explain")}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_has_examples_and_no_bool_placeholder(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.stdout
    assert "pcache " + " ".join(path).replace("check_config", "check-config") in result.stdout
    assert "<bool>" not in result.stdout


def test_root_help_shows_flags_without_a_value_placeholder() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0 and "<bool>" not in result.stdout and "--no-headers" in result.stdout
