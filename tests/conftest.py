"""Suite-wide settings.

- Isolation: routers started by tests keep their generated admin token in a temporary state
  directory, never in the user's ``~/.local/state/pcache`` (see :mod:`pcache.credentials`).
- Markers: every test carries the marker of its folder (``tests/integration`` -> ``integration``,
  ...), so ``pytest -m unit`` or ``-m "not integration"`` selects by what a test needs, not by a path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Folder -> marker; each marker is registered in pyproject.toml ([tool.pytest.ini_options] markers).
FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "console": "console",
    "adversarial": "adversarial",
    "engines_real": "real_engine",
}


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("PCACHE_STATE_DIR")
    os.environ["PCACHE_STATE_DIR"] = str(tmp_path_factory.mktemp("pcache-state"))
    yield
    if previous is None:
        os.environ.pop("PCACHE_STATE_DIR", None)
    else:
        os.environ["PCACHE_STATE_DIR"] = previous


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        marker = FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)
