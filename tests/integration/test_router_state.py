"""The router and its state store: a state file it cannot trust stops it with one line (and
``--reset-state`` starts over on purpose), an unknown ``state:`` scheme is refused, and a store
write that cannot be made is a clear error that never stalls the data plane."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration

TEXT = "You are the billing assistant of Globex. Explain invoices step by step. " * 12


def _config(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "router.yaml"
    document = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0"},
        "replicas": [{"name": "r1", "url": "http://127.0.0.1:9"}],
        "state": state,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _serve(config: Path, *extra: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", "router", "serve", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_a_truncated_state_file_stops_serve_with_one_line_naming_it(tmp_path: Path) -> None:
    """Regression: a state file truncated to 0 bytes was silently taken as empty."""
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"")
    result = _serve(_config(tmp_path, str(state)))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and str(state) in lines[0] and "empty" in lines[0], result.stderr


def test_reset_state_moves_the_refused_file_aside_and_starts(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"garbage, not a database" * 50)
    config = _config(tmp_path, str(state))
    process = subprocess.Popen(
        [sys.executable, "-m", "pcache_cli.main", "router", "serve", "-c", str(config), "--reset-state"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(3)]  # data, admin, ready (or EOF)
        assert lines[2] == "ready", (lines, process.poll())
    finally:
        os.killpg(process.pid, 15)
        _, stderr = process.communicate(timeout=20)
    assert "state reset: the old state file was moved to" in stderr
    assert [p.name for p in tmp_path.glob("state.sqlite.reset-*")], list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_an_unknown_state_scheme_is_refused_with_one_line(tmp_path: Path, command: str) -> None:
    """Regression: `state: foo://x` silently created a sqlite file under ./foo:/x."""
    config = _config(tmp_path, "foo://x")
    result = subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", "router", command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "unknown state scheme 'foo'" in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") <= 1, result.stderr  # `error: <where>` + the reason at most
    assert not (tmp_path / "foo:").exists()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=2) as fleet:
        yield fleet


def test_a_write_while_another_process_locks_the_file_is_503_and_the_data_plane_keeps_answering(
    sim: SimFleet, tmp_path: Path
) -> None:
    """Regression: with another process holding the file lock, every admin write froze the data
    plane for 5 s and returned a bare 500."""
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path) as router:
        holder = sqlite3.connect(tmp_path / "router-state.sqlite", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        answers: list[str] = []
        pinned: list[httpx.Response] = []

        def pin() -> None:
            pinned.append(
                httpx.put(
                    f"{router.admin_url}/api/v1/pins/billing",
                    json={"text": TEXT, "copies": 1},
                    headers={"authorization": f"Bearer {router.token}"},
                    timeout=30,
                )
            )
            answers.append("pin")

        writer = threading.Thread(target=pin)
        try:
            writer.start()
            while writer.is_alive() and "health" not in answers:
                health = httpx.get(f"{router.url}/health", timeout=30)
                assert health.status_code == 200, (health.status_code, health.text)
                if writer.is_alive():
                    answers.append("health")  # answered while the write was waiting for the lock
            writer.join(30)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert answers[0] == "health", answers
        response = pinned[0]
        assert response.status_code == 503, (response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"] == "state_locked" and "locked by another process" in error["message"]
        assert response.headers["retry-after"] == "1"
        with router.admin() as admin:
            assert admin.pins() == []  # refused means not applied either
        again = httpx.put(
            f"{router.admin_url}/api/v1/pins/billing",
            json={"text": TEXT, "copies": 1},
            headers={"authorization": f"Bearer {router.token}"},
            timeout=30,
        )
        assert again.status_code == 200, (again.status_code, again.text)
