"""`pcache config show` (effective settings and their sources) and `pcache config check FILE`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from pcache_cli.common import ExitCode, fail
from pcache_cli.context import get_context
from pcache_cli.output import OutputOpt, emit
from pcache_cli.settings import FILE_KEYS

__all__ = ["register"]


def _shown(key: str, value: object) -> object:
    """Values as printed: the token is never echoed, only whether it is set."""
    if key == "token":
        return None if value is None else "<set>"
    return str(value) if key == "output" else value


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Show the CLI's settings or check a router config file.", no_args_is_help=True)
    app.add_typer(group, name="config", rich_help_panel="Other")

    @group.command("show")
    def show(ctx: typer.Context, output: OutputOpt = None) -> None:
        """Print effective settings and where each came from (flag, PCACHE_* env, config file, default).

        Examples:

          pcache config show

          pcache --router http://10.0.0.5:8081 config show -o json
        """
        cli = get_context(ctx)
        values = {
            "router": cli.router,
            "token": cli.token,
            "output": cli.output,
            "no_color": cli.no_color,
            "timeout": cli.timeout,
            "prometheus": cli.prometheus,
        }
        rows: list[dict[str, Any]] = [
            {"key": key, "value": _shown(key, values[key]), "source": cli.sources.get(key, "default")}
            for key in FILE_KEYS
        ]
        fmt = cli.output_for(output)

        def settings_table(_wide: bool) -> Table:
            table = Table(box=None, pad_edge=False, header_style="bold")
            for header in ("KEY", "VALUE", "SOURCE"):
                table.add_column(header, no_wrap=True)
            for row in rows:
                table.add_row(row["key"], "-" if row["value"] is None else str(row["value"]), row["source"])
            return table

        emit(
            cli,
            fmt,
            document={"config_file": cli.config_file, "settings": rows},
            items=rows,
            render=settings_table,
        )

    @group.command("check")
    def check(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="A router config (router.yaml).")],
        output: OutputOpt = None,
    ) -> None:
        """Validate a router config: every error names its field and line.

        Examples:

          pcache config check router.yaml
        """
        from pcache.router.checks import check_config_file
        from pcache.router.config import ConfigError

        cli = get_context(ctx)
        try:
            config = check_config_file(file)  # the very checks `pcache router serve` makes
        except ConfigError as exc:
            lines = str(exc).splitlines()
            for line in lines[1:]:
                print(f"error: {line}", file=sys.stderr)
            fail(lines[0] if lines else f"{file}: invalid config", ExitCode.USAGE)
        summary = {
            "file": str(file),
            "ok": True,
            "replicas": [replica.name for replica in config.replicas],
            "tier1": [prefix.name for prefix in config.tier1],
            "policy": config.policy.name,
            "listen": config.listen,
            "admin_listen": config.admin.listen,
        }
        fmt = cli.output_for(output)
        line = (
            f"{file}: ok (policy {config.policy.name}, {len(config.replicas)} replicas, "
            f"{len(config.tier1)} tier-1 prefixes, data plane {config.listen}, admin {config.admin.listen})"
        )
        emit(cli, fmt, document=summary, items=[summary], render=lambda _wide: Text(line))
