"""Recent error rates by kind, through a live router, as `pcache status -o json` reports them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pcache_cli.main import app
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration

CLEAR = {"error_rate": 0.0, "die_after_chunks": None}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=2) as fleet:
        yield fleet


@pytest.fixture()
def router(sim: SimFleet, tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess(replicas=dict(sim.urls), state_dir=tmp_path) as process:
        yield process
    for name in sim.urls:
        sim.set_faults(name, **CLEAR)


def _status(router: RouterProcess, home: Path) -> dict[str, Any]:
    env = {
        "PCACHE_ROUTER": router.admin_url,
        "NO_COLOR": "1",
        "PCACHE_CONFIG": "",
        "XDG_CONFIG_HOME": str(home),
    }
    result = CliRunner().invoke(app, ["status", "-o", "json"], env=env)
    assert result.exit_code == 0, result.output
    snapshot: dict[str, Any] = json.loads(result.stdout)
    return snapshot


def _row(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    row: dict[str, Any] = next(r for r in snapshot["replicas"] if r["name"] == name)
    return row


def _chat(router: RouterProcess, session: str, *, stream: bool = False) -> httpx.Response:
    body = {
        "model": "sim-model",
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": f"hello from {session}"}],
    }
    return httpx.post(
        f"{router.url}/v1/chat/completions", json=body, headers={"x-session-id": session}, timeout=30
    )


def test_a_healthy_fleet_reports_zero_error_rates_over_a_stated_window(
    router: RouterProcess, tmp_path: Path
) -> None:
    for n in range(4):
        response = _chat(router, f"ok-{n}")
        assert response.status_code == 200, response.text
    snapshot = _status(router, tmp_path)
    assert snapshot["all"]["error_rate"] == 0.0
    assert snapshot["all"]["errors"]["window_s"] > 0
    for row in snapshot["replicas"]:
        assert row["errors"]["upstream"] == 0
        assert row["error_rate"] in (0.0, None)  # None: no work reached it


def test_a_retried_failure_counts_on_the_failing_replica_not_for_the_client(
    router: RouterProcess, sim: SimFleet, tmp_path: Path
) -> None:
    first = _chat(router, "retry-me")
    home = first.headers["x-pcache-replica"]
    sim.set_faults(home, error_rate=1.0)
    second = _chat(router, "retry-me")
    assert second.status_code == 200, second.text
    assert second.headers["x-pcache-replica"] != home
    snapshot = _status(router, tmp_path)
    failing = _row(snapshot, home)
    assert failing["errors"]["upstream"] == 1
    assert failing["errors"]["retries"] == 1
    assert failing["error_rate"] == pytest.approx(1 / 2)  # one good answer, one failed attempt
    assert snapshot["all"]["errors"]["router_5xx"] == 0
    assert snapshot["all"]["error_rate"] == 0.0


def test_every_replica_failing_shows_as_router_5xx_and_a_callout(
    router: RouterProcess, sim: SimFleet, tmp_path: Path
) -> None:
    for name in sim.urls:
        sim.set_faults(name, error_rate=1.0)
    for n in range(3):
        response = _chat(router, f"doomed-{n}")
        assert response.status_code >= 500, response.text
    snapshot = _status(router, tmp_path)
    assert snapshot["all"]["errors"]["router_5xx"] == 3
    assert snapshot["all"]["error_rate"] == 1.0
    assert sum(r["errors"]["upstream"] for r in snapshot["replicas"]) >= 3
    assert any("of attempts failed" in line for line in snapshot["callouts"]), snapshot["callouts"]


def test_a_stream_broken_midway_counts_as_mid_stream_not_as_5xx(
    router: RouterProcess, sim: SimFleet, tmp_path: Path
) -> None:
    for name in sim.urls:
        sim.set_faults(name, die_after_chunks=2)
    response = _chat(router, "broken-stream", stream=True)
    assert response.status_code == 200  # the head went out before the replica died
    assert "mid-stream" in response.text
    snapshot = _status(router, tmp_path)
    served = response.headers["x-pcache-replica"]
    assert _row(snapshot, served)["errors"]["mid_stream"] == 1
    assert snapshot["all"]["errors"] | {"window_s": 0} == {
        "window_s": 0,
        "router_5xx": 0,
        "upstream": 0,
        "mid_stream": 1,
        "retries": 0,
    }
