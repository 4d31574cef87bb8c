"""Suite-wide isolation: routers started by tests keep their generated admin token in a temporary
state directory, never in the user's ``~/.local/state/pcache`` (see :mod:`pcache.credentials`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    previous = os.environ.get("PCACHE_STATE_DIR")
    os.environ["PCACHE_STATE_DIR"] = str(tmp_path_factory.mktemp("pcache-state"))
    yield
    if previous is None:
        os.environ.pop("PCACHE_STATE_DIR", None)
    else:
        os.environ["PCACHE_STATE_DIR"] = previous
