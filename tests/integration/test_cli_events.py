"""`pcache events` against a live router: operator actions and replica state changes, in order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pcache_cli.main import app
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[tuple[SimFleet, RouterProcess]]:
    with SimFleet(replicas=2) as sim, RouterProcess(replicas=dict(sim.urls), state_dir=tmp_path) as router:
        yield sim, router


def _events(router: RouterProcess, home: Path, *args: str) -> list[dict[str, Any]]:
    env = {"PCACHE_ROUTER": router.admin_url, "PCACHE_CONFIG": "", "XDG_CONFIG_HOME": str(home)}
    result = CliRunner().invoke(app, ["events", "-o", "json", *args], env=env)
    assert result.exit_code == 0, result.output
    events: list[dict[str, Any]] = json.loads(result.stdout)
    return events


def test_drains_and_state_changes_are_listed_oldest_first(
    stack: tuple[SimFleet, RouterProcess], tmp_path: Path
) -> None:
    sim, router = stack
    with router.admin() as admin:
        admin.drain("r1")
        eventually(lambda: next(r for r in admin.replicas() if r.name == "r1").state == "drained")
        admin.undrain("r1")
        sim.set_faults("r2", unhealthy=True)
        eventually(lambda: next(r for r in admin.replicas() if r.name == "r2").state == "unhealthy")
    events = _events(router, tmp_path)
    seen = [(e["kind"], e.get("replica")) for e in events]
    assert seen[:2] == [("replica_state", "r1"), ("drain", "r1")]  # drained at once: idle
    assert ("undrain", "r1") in seen and ("replica_state", "r2") in seen
    assert seen.index(("undrain", "r1")) < seen.index(("replica_state", "r2"))
    down = next(e for e in events if e["kind"] == "replica_state" and e["replica"] == "r2")
    assert down["message"].startswith("r2: healthy -> unhealthy") and down["ok"] is False
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    only = _events(router, tmp_path, "--kind", "undrain")
    assert [e["kind"] for e in only] == ["undrain"]
