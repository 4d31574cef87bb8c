"""Global flags anywhere on the command line: which tokens move before the subcommand, and which stay."""

from __future__ import annotations

import typer

from pcache_cli.global_flags import GlobalFlagsGroup, hoist_global_flags
from pcache_cli.main import app


def _hoist(*args: str) -> list[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, GlobalFlagsGroup)
    return hoist_global_flags(group, typer.Context(group), list(args))


def test_flags_after_the_subcommand_move_before_it() -> None:
    assert _hoist("drain", "r3", "--token", "T", "--router", "http://h:8081") == [
        "--token",
        "T",
        "--router",
        "http://h:8081",
        "drain",
        "r3",
    ]


def test_equals_forms_and_value_less_flags_move_too() -> None:
    assert _hoist("status", "--router=http://h", "--no-color", "-w") == [
        "--router=http://h",
        "--no-color",
        "status",
        "-w",
    ]


def test_flags_already_in_front_are_left_alone() -> None:
    args = ["--router", "http://h", "drain", "r3", "--dry-run"]
    assert _hoist(*args) == args


def test_nested_groups_are_walked_to_the_leaf_command() -> None:
    assert _hoist("route", "explain", "--token", "T", "--session", "s1") == [
        "--token",
        "T",
        "route",
        "explain",
        "--session",
        "s1",
    ]


def test_a_subcommand_s_own_option_of_the_same_name_wins() -> None:
    # loadgen's --router is the data-plane URL; the command's own -o stays with the command.
    args = ["loadgen", "--router", "http://data:8080", "-o", "json"]
    assert _hoist(*args) == args


def test_values_of_the_command_s_options_and_everything_after_double_dash_stay() -> None:
    assert _hoist("drain", "r3", "--confirm", "--token", "--", "--router", "x") == [
        "drain",
        "r3",
        "--confirm",
        "--token",
        "--",
        "--router",
        "x",
    ]


def test_unknown_subcommands_are_left_for_click_to_report() -> None:
    args = ["nope", "--router", "x"]
    assert _hoist(*args) == args
