"""``python -m pcache.sim`` and ``python -m pcache.router``: the engine starts without the CLI package,
and the CLI's ``pcache sim`` / ``pcache router serve`` refuse the same input with the same words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "NO_COLOR": "1"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=ENV, check=False
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--num-gpu-blocks", "0"), "error: --num-gpu-blocks must be at least 1"),
        (("--t0-ms", "-1"), "error: timings must not be negative"),
        (("--base-port", "70000"), "error: --base-port must be between 0 and 65535"),
    ],
)
def test_the_simulator_refuses_bad_options_alike_with_and_without_the_cli(
    flags: tuple[str, ...], message: str
) -> None:
    for command in (("-m", "pcache.sim"), ("-m", "pcache_cli.main", "sim")):
        result = _run(*command, *flags)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == message
        assert result.stdout == ""


def test_the_router_refuses_a_broken_config_alike_with_and_without_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("listen: [\n", encoding="utf-8")
    engine = _run("-m", "pcache.router", "-c", str(config))
    cli = _run("-m", "pcache_cli.main", "router", "serve", "-c", str(config))
    for result in (engine, cli):
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: {config}:2: invalid YAML"), result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert engine.stderr == cli.stderr


def test_the_engine_never_imports_the_cli_when_it_serves() -> None:
    """``-m pcache.sim --help`` loads the whole launcher; neither UI package may come with it."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['pcache.sim', '--help']\n"
        "try:\n"
        "    runpy.run_module('pcache.sim', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "import pcache.router.launch, pcache.router.daemon, pcache.demo, pcache.testing\n"
        "ui = ('pcache_cli', 'pcache_console', 'typer')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ui))\n"
    )
    result = _run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
