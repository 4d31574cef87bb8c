"""``pcache sim`` as a process: announcement lines, signals, port release, usage errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pcache.testing.http import expect_status
from pcache.testing.ports import free_port
from pcache.testing.sim import SimFleet, SimFleetError


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", "sim", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0_and_releases_every_port(stop_signal: signal.Signals) -> None:
    fleet = SimFleet(replicas=3)
    fleet.start()
    ports = [int(url.rsplit(":", 1)[1]) for url in fleet.urls.values()]
    assert not any(port_is_free(port) for port in ports)
    assert fleet.process is not None
    fleet.process.send_signal(stop_signal)
    assert fleet.process.wait(10) == 0
    fleet.stop()
    assert all(port_is_free(port) for port in ports)
    assert "Traceback" not in fleet.stderr


async def test_shutdown_does_not_wait_forever_for_a_stalled_request() -> None:
    with SimFleet(replicas=1) as fleet:
        fleet.set_faults(stall=True)
        assert fleet.process is not None
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": "sim-model", "prompt": "x"}
            pending = asyncio.create_task(client.post(f"{fleet.url()}/v1/completions", json=body))
            done, _ = await asyncio.wait([pending], timeout=0.2)
            assert not done
            fleet.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(fleet.process.wait, 10) == 0
            outcome = (await asyncio.gather(pending, return_exceptions=True))[0]
        # released on shutdown: either answered or cut off, never left hanging
        assert isinstance(outcome, httpx.HTTPError | httpx.Response)


def test_base_port_assigns_consecutive_ports_to_named_replicas() -> None:
    base = free_port()
    if not port_is_free(base + 1):
        pytest.skip("the next port is taken")
    with SimFleet(replicas=2, extra_args=("--base-port", str(base))) as fleet:
        assert fleet.urls == {"r1": f"http://127.0.0.1:{base}", "r2": f"http://127.0.0.1:{base + 1}"}
        expect_status(httpx.get(f"{fleet.url('r2')}/health"), 200)


def test_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--replicas", "1", "--base-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: cannot bind")
    assert "ready" not in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--replicas", "0"), "--replicas"),
        (("--num-gpu-blocks", "0"), "--num-gpu-blocks"),
        (("--config", "/nonexistent/fleet.yaml"), "cannot read"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], needle: str) -> None:
    result = run_cli("--base-port", "0", *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_is_rejected_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("replicas:\n  - name: a\n    faults: {error_rate: 3}\n", encoding="utf-8")
    result = run_cli("--base-port", "0", "--config", str(config))
    assert result.returncode == 2
    assert "error_rate must be between 0 and 1" in result.stderr
    with pytest.raises(SimFleetError, match="error_rate"):
        SimFleet(replicas=None, config=config).start()


async def test_harness_works_as_an_async_context_manager() -> None:
    async with SimFleet(replicas=1) as fleet, httpx.AsyncClient() as client:
        expect_status((await client.get(f"{fleet.url()}/health")), 200)
    assert fleet.returncode == 0
