"""`pcache status` in direct mode against real simulated replicas (no router), and the import guard."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pcache.testing.http import expect_ok
from pcache.testing.ports import free_port
from pcache.testing.sim import SimFleet
from pcache_cli.main import app

PROMPT = "You are a meticulous assistant. " * 40


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with SimFleet(replicas=2) as sim:
        for _ in range(3):  # the same prompt twice or more: the second and third hit the prefix cache
            response = httpx.post(
                f"{sim.urls['r1']}/v1/completions",
                json={"model": "sim-model", "prompt": PROMPT, "max_tokens": 2},
                timeout=10,
            )
            expect_ok(response)
        yield sim


def _env(tmp_path: Path) -> dict[str, str]:
    return {"NO_COLOR": "1", "XDG_CONFIG_HOME": str(tmp_path), "PCACHE_CONFIG": ""}


def test_direct_status_reads_each_replica_metrics_without_a_router(fleet: SimFleet, tmp_path: Path) -> None:
    urls = f"r1={fleet.urls['r1']},r2={fleet.urls['r2']}"
    result = CliRunner().invoke(app, ["status", "--replicas", urls, "-o", "json"], env=_env(tmp_path))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["replicas"]}
    assert list(rows) == ["r1", "r2"]
    assert rows["r1"]["engine"] == "vllm" and rows["r1"]["state"] == "healthy"
    assert rows["r1"]["requests_total"] == 3 and rows["r2"]["requests_total"] == 0
    assert 0 < rows["r1"]["hit_rate"] < 1  # later requests hit the first one's blocks
    assert rows["r1"]["ttft_p50"] is not None and rows["r2"]["ttft_p50"] is None
    assert data["all"]["requests_total"] == 3
    assert data["router"]["policy"] == "direct" and data["router"]["drift_ratio"] is None
    assert all(row["sessions"] == 0 for row in data["replicas"])


def test_direct_status_table_shows_a_dead_replica_as_a_row_and_a_callout(
    fleet: SimFleet, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "router.yaml"
    config.write_text(
        "replicas:\n"
        f"  - {{name: r1, url: '{fleet.urls['r1']}'}}\n"
        f"  - {{name: r2, url: '{fleet.urls['r2']}'}}\n"
        f"  - {{name: r9, url: '{dead}'}}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["status", "--config", str(config)], env=_env(tmp_path))
    assert result.exit_code == 5, result.stderr  # partial: the table, then one line naming r9
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.split()}
    assert "direct mode" in result.stdout.splitlines()[0]
    assert "healthy" in lines["r1"] and "UNHEALTHY STALE" in lines["r9"]
    assert "ALL" in lines
    assert "! r9: unhealthy" in result.stdout
    assert result.stderr.splitlines() == [
        next(line for line in result.stderr.splitlines() if line.startswith("error: 1 of 3 replicas"))
    ]
    assert f"r9 ({dead})" in result.stderr


def test_direct_status_exits_3_when_no_replica_answers(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    result = CliRunner().invoke(app, ["status", "--replicas", ",".join(dead)], env=_env(tmp_path))
    assert result.exit_code == 3, result.output
    assert len(result.stderr.splitlines()) == 1 and "no replica answered" in result.stderr
    assert "and 1 more" in result.stderr


def test_direct_status_with_a_broken_config_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("replicas:\n  - name: r1\n    url: ftp://nope\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["status", "--config", str(config)], env=_env(tmp_path))
    assert result.exit_code == 1
    assert f"{config}:3: replicas[0].url" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_json_never_imports_textual(fleet: SimFleet, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['pcache', 'status', '--replicas', {fleet.urls['r1']!r}, '-o', 'json']\n"
        "from pcache_cli.main import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "else:\n"
        "    code = 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'pcache_console'))\n"
        "print('EXIT', code, 'UI', ','.join(loaded) or '-', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path) | _path_env(),
    )
    assert "EXIT 0 UI -" in result.stderr, result.stderr
    assert json.loads(result.stdout)["replicas"][0]["engine"] == "vllm"


def _path_env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "PYTHONPATH")}
