"""The engine stays free of user interfaces, the console free of the CLI, and light CLI paths never
load Textual (the static contracts are import-linter's, in pyproject.toml; these check what loads)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pcache


def _engine_modules() -> list[str]:
    """Every engine module except the ``__main__`` entry points (importing one would run it)."""
    return [
        m.name
        for m in pkgutil.walk_packages(pcache.__path__, prefix="pcache.")
        if not m.name.endswith(".__main__")
    ]


def _loaded_after(imports: str, roots: tuple[str, ...]) -> list[str]:
    """The modules under ``roots`` a fresh interpreter holds after running ``imports``."""
    listing = f"sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})"
    code = f"import sys\n{imports}\nprint(','.join({listing}))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in result.stdout.strip().split(",") if name]


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


def test_the_console_loads_neither_typer_nor_the_cli() -> None:
    loaded = _loaded_after("import pcache_console.app, pcache_console.launch", ("typer", "pcache_cli"))
    assert loaded == [], f"the console pulled in: {loaded}"
