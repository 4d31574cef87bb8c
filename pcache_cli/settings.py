"""Where the CLI's global settings come from: flag > ``PCACHE_*`` environment > config file > default.

The config file is ``$PCACHE_CONFIG`` or ``~/.config/pcache/config.yaml`` (keys ``router``, ``token``,
``output``, ``no_color``, ``timeout``); a missing default file is fine, a broken one is an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pcache.client import DEFAULT_ADMIN_URL
from pcache_cli.common import ExitCode, fail
from pcache_cli.output import OutputFormat, OutputSpec, parse_output

__all__ = ["ENV", "FILE_KEYS", "config_path", "load_config_file", "resolve"]

ENV = {
    "router": "PCACHE_ROUTER",
    "token": "PCACHE_ADMIN_TOKEN",
    "output": "PCACHE_OUTPUT",
    "timeout": "PCACHE_TIMEOUT",
    "prometheus": "PCACHE_PROMETHEUS",
}
FILE_KEYS = ("router", "token", "output", "no_color", "timeout", "prometheus")
DEFAULTS: dict[str, Any] = {
    "router": DEFAULT_ADMIN_URL,
    "token": None,
    "output": OutputSpec(OutputFormat.TABLE),
    "no_color": False,
    "timeout": 5.0,
    "prometheus": None,
}


def config_path() -> tuple[Path, bool]:
    """The config file to read and whether it was named explicitly (``$PCACHE_CONFIG``)."""
    explicit = os.environ.get("PCACHE_CONFIG")
    if explicit:
        return Path(explicit).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pcache" / "config.yaml", False


def load_config_file() -> tuple[dict[str, Any], Path | None]:
    """The CLI config file's settings (empty when there is none) and the path they came from."""
    path, explicit = config_path()
    if not path.exists():
        if explicit:
            fail(f"{path}: config file not found (from PCACHE_CONFIG)", ExitCode.USAGE)
        return {}, None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        fail(f"{path}: cannot read config file: {exc.strerror or exc}", ExitCode.USAGE)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        fail(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}", ExitCode.USAGE)
    if not isinstance(data, dict):
        fail(f"{path}: config file must be a mapping of settings", ExitCode.USAGE)
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        fail(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(FILE_KEYS)})", ExitCode.USAGE)
    return data, path


def _coerce(key: str, value: Any, where: str) -> Any:
    try:
        if key == "output":
            return parse_output(str(value))
        if key == "timeout":
            timeout = float(value)
            if timeout <= 0:
                raise ValueError("must be positive")
            return timeout
        if key == "no_color":
            if isinstance(value, bool):
                return value
            raise ValueError("must be true or false")
        return None if value is None else str(value)
    except ValueError as exc:
        fail(f"{where}: invalid {key} {value!r}: {exc}", ExitCode.USAGE)


def resolve(
    given: dict[str, Any], given_sources: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str], Path | None]:
    """Effective settings and each one's source, from what Typer parsed plus the config file.

    ``given_sources`` says, per key, whether Typer took it from the command line (``flag``) or the
    environment (``env``); anything else falls through to the config file, then the default.
    """
    file_values, path = load_config_file()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in FILE_KEYS:
        source = given_sources.get(key)
        if source == "flag":
            values[key], sources[key] = given[key], "flag"
        elif source == "env":
            values[key], sources[key] = given[key], f"env {ENV.get(key, 'NO_COLOR')}"
        elif key in file_values:
            values[key] = _coerce(key, file_values[key], str(path))
            sources[key] = f"file {path}"
        else:
            values[key], sources[key] = DEFAULTS[key], "default"
    return values, sources, path
