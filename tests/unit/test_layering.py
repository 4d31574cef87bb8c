"""The engine stays free of user interfaces, and light CLI paths never load Textual."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pcache


def _engine_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(pcache.__path__, prefix="pcache.")]


def test_engine_package_imports_neither_textual_nor_typer() -> None:
    modules = _engine_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('textual', 'typer', 'pcache_cli', 'pcache_console'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"pcache/ pulled in UI modules: {result.stdout.strip()}"
