"""Global flags accepted anywhere on the command line, as kubectl accepts them.

Click parses a group's options only before the subcommand, so ``pcache drain r3 --token T`` would
fail with "No such option". :class:`GlobalFlagsGroup` is the root command's class: before parsing,
it moves every global flag found after the subcommand to the front, unless the subcommand declares
an option of the same name itself (``loadgen --router`` is the data-plane URL, not the admin API).
Nothing after ``--`` is touched. (Typer vendors its own click, so commands are told apart by
Typer's classes, not click's.)
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup, TyperOption

__all__ = ["GLOBAL_FLAGS", "GlobalFlagsGroup", "hide_flag_types", "hoist_global_flags"]

# Flag -> whether it takes a value. Keep in step with the root callback in pcache_cli.main.
GLOBAL_FLAGS: dict[str, bool] = {
    "--router": True,
    "--token": True,
    "--request-timeout": True,
    "--output": True,
    "-o": True,
    "--no-color": False,
    "--no-headers": False,
}


def _options(command: Any) -> list[TyperOption]:
    return [param for param in command.params if isinstance(param, TyperOption)]


def _option_names(command: Any) -> set[str]:
    return {name for option in _options(command) for name in (*option.opts, *option.secondary_opts)}


def _takes_value(command: Any, flag: str) -> bool:
    for option in _options(command):
        if flag in option.opts:
            return not option.is_flag and not option.count
    return False


def _leaf(group: TyperGroup, ctx: typer._click.Context, args: list[str]) -> tuple[Any, int]:
    """The command the arguments name and the index just after its name (walking nested groups)."""
    command: Any = group
    index = 0
    while isinstance(command, TyperGroup) and index < len(args):
        token = args[index]
        if token == "--":
            return None, index
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            takes = GLOBAL_FLAGS.get(name, False) if command is group else _takes_value(command, name)
            index += 2 if takes and "=" not in token else 1
            continue
        sub = command.get_command(ctx, token)
        if sub is None:
            return None, index
        command = sub
        index += 1
    return (command if command is not group else None), index


def hoist_global_flags(group: TyperGroup, ctx: typer._click.Context, args: list[str]) -> list[str]:
    """``args`` with the global flags after the subcommand moved before it."""
    leaf, start = _leaf(group, ctx, args)
    if leaf is None:
        return args
    own = _option_names(leaf)
    hoisted: list[str] = []
    rest: list[str] = []
    index = start
    while index < len(args):
        token = args[index]
        if token == "--":
            rest.extend(args[index:])
            break
        name = token.split("=", 1)[0]
        if name in GLOBAL_FLAGS and name not in own:
            takes = GLOBAL_FLAGS[name] and "=" not in token
            hoisted.extend(args[index : index + (2 if takes else 1)])
            index += 2 if takes else 1
            continue
        rest.append(token)
        if token.startswith("-") and "=" not in token and _takes_value(leaf, token):
            if index + 1 < len(args):
                rest.append(args[index + 1])  # an option's value is never a flag of ours
            index += 2
            continue
        index += 1
    return [*hoisted, *args[:start], *rest]


def hide_flag_types(command: Any) -> None:
    """Show on/off flags as bare flags in ``--help`` (Typer prints a ``<bool>`` value for them,
    as if ``--watch`` took one), in ``command`` and every command under it."""
    help_option = command.get_help_option(typer.Context(command))  # made lazily, then cached
    for option in [*_options(command), *([help_option] if help_option else [])]:
        if option.is_flag and option.metavar is None:
            option.metavar = ""  # an empty metavar: Typer prints no type column for the option
    for sub in getattr(command, "commands", {}).values():
        hide_flag_types(sub)


class GlobalFlagsGroup(TyperGroup):
    """The root ``pcache`` group: global flags work before or after the subcommand, and on/off
    flags show as flags in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hide_flag_types(self)

    def format_help(self, ctx: typer._click.Context, formatter: typer._click.HelpFormatter) -> None:
        hide_flag_types(self)  # again: Typer adds --install-completion after __init__
        super().format_help(ctx, formatter)

    # The base class takes the Click context typer vendors (typer.Context is its subclass).
    def parse_args(self, ctx: typer._click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_flags(self, ctx, list(args)))
