"""``pcache router serve --workers N``: N data-plane processes on one port sharing the state file;
an operator change made through the admin API reaches every worker's traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pcache.api import PinIn
from pcache.client import SyncAdminClient
from tests.harness.sim import SimFleet
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration

TOKEN = "workers-test-token-0123456789abcdef"
SYSTEM = "You are the billing assistant of Globex. Explain invoices step by step. " * 12


def _config(tmp_path: Path, replicas: dict[str, str], state: str) -> Path:
    path = tmp_path / "router.yaml"
    document = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0", "token_env": "PCACHE_WORKERS_TEST_TOKEN"},
        "replicas": [{"name": n, "url": u} for n, u in replicas.items()],
        "health": {"interval_s": 0.5, "timeout_s": 1.0},
        "state": state,
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=3) as fleet:
        yield fleet


@pytest.fixture()
def workers(sim: SimFleet, tmp_path: Path) -> Iterator[tuple[str, str]]:
    config = _config(tmp_path, sim.urls, str(tmp_path / "state.sqlite"))
    process = subprocess.Popen(
        [sys.executable, "-m", "pcache_cli.main", "router", "serve", "-c", str(config), "--workers", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PCACHE_WORKERS_TEST_TOKEN": TOKEN},
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(3)]
        assert lines[2] == "ready", lines
        yield lines[0].removeprefix("data "), lines[1].removeprefix("admin ")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _served_by(url: str, session: str) -> str:
    body = {
        "model": "sim-model",
        "messages": [{"role": "user", "content": f"hi from {session}"}],
        "max_tokens": 1,
    }
    response = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"x-session-id": session}, timeout=30
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response.headers["x-pcache-replica"]


def test_three_workers_serve_one_port_and_a_drain_reaches_all_of_them(workers: tuple[str, str]) -> None:
    data_url, admin_url = workers
    with SyncAdminClient(admin_url, token=TOKEN) as admin:
        members = eventually(lambda: len(rows := admin.routers()) == 3 and rows, what="three workers listed")
        assert sorted(r.id.rsplit("/", 1)[1] for r in members) == ["w0", "w1", "w2"]
        assert len({r.id.split("/")[0] for r in members}) == 3  # three processes
        admin.pin("billing", PinIn(text=SYSTEM, replicas=["r3"]))
        admin.drain("r1")

    def none_on_r1(batch: int) -> bool:  # each request on a new connection: the kernel spreads them
        return all(_served_by(data_url, f"after-{batch}-{i}") != "r1" for i in range(15))

    eventually(lambda: none_on_r1(0), what="every worker to apply the drain")
    assert none_on_r1(1) and none_on_r1(2)


def test_workers_need_a_shared_store(sim: SimFleet, tmp_path: Path) -> None:
    config = _config(tmp_path, sim.urls, "memory://")
    result = subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", "router", "serve", "-c", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PCACHE_WORKERS_TEST_TOKEN": TOKEN},
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "--workers needs a state store" in result.stderr
