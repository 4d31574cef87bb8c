"""A short soak: ``bench/soak.py`` with a few hundred requests and faults switching every 30 ms.

The bench does the accounting (every request a success or an explicit error, none lost, router and
replica counters agreeing with the client, no completion delivered twice, no leaked connection or
fd); this test runs it as the real command and checks its JSON figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_with_random_faults_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--requests",
            "600",
            "--concurrency",
            "40",
            "--fault-interval",
            "0.03",
            "--seed",
            "7",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert figures["failures"] == []
    assert figures["lost"] == 0
    assert figures["ok"] + sum(figures["explicit_errors"].values()) == figures["requests"] == 600
    assert figures["router_responses"] == 600
    assert figures["replica_successes"] == figures["ok"]
    assert figures["duplicate_completion_ids"] == 0
    assert figures["faults_injected"] >= 3, "faults were actually injected"
    assert figures["retries"] + sum(figures["explicit_errors"].values()) > 0, "and they bit"
    end = figures["sockets_end"]
    assert end["client"] == 0 and end["close_wait"] == 0, end
    assert end["non_socket"] <= figures["sockets_start"]["non_socket"] + 2
    # With a retry for every other candidate, only mid-stream deaths (after bytes reached the client)
    # may surface as errors, and only as the OpenAI-style stream error event.
    assert set(figures["explicit_errors"]) <= {"stream error event"}, figures["explicit_errors"]
    assert figures["ok"] >= 450
