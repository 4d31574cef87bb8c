"""Injected faults, at run time (POST /sim/faults) and from the fleet config."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcache.engines import parse_metrics
from pcache.testing.http import expect_status
from pcache.testing.sim import SimFleet

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}


DEFAULTS = {
    "slow_factor": 1.0,
    "error_rate": 0.0,
    "stall": False,
    "die_after_chunks": None,
    "unhealthy": False,
}


@pytest.fixture(scope="module")
def shared_fleet() -> Iterator[SimFleet]:
    with SimFleet(replicas=2) as running:
        yield running


@pytest.fixture
def fleet(shared_fleet: SimFleet) -> Iterator[SimFleet]:
    """The module's fleet, with every fault cleared again after each test."""
    yield shared_fleet
    for name in shared_fleet.urls:
        shared_fleet.set_faults(name, **DEFAULTS)


def test_faults_endpoint_reports_and_validates(fleet: SimFleet) -> None:
    state = httpx.get(f"{fleet.url()}/sim/faults").json()
    assert state == {**DEFAULTS, "restarts": state["restarts"]}
    for bad in ({"error_rate": 2}, {"slow_factor": 0}, {"explode": True}, {"stall": "yes"}, [1]):
        response = httpx.post(f"{fleet.url()}/sim/faults", json=bad)
        expect_status(response, 400)
        assert response.json()["error"]["type"] == "BadRequestError"
    assert httpx.get(f"{fleet.url()}/sim/faults").json() == state


def test_error_rate_one_fails_every_request_with_500_and_an_error_body(fleet: SimFleet) -> None:
    fleet.set_faults("r1", error_rate=1.0)
    response = httpx.post(f"{fleet.url('r1')}/v1/chat/completions", json=CHAT)
    expect_status(response, 500)
    assert response.json()["error"]["code"] == 500
    expect_status(httpx.post(f"{fleet.url('r2')}/v1/chat/completions", json=CHAT), 200)
    fleet.set_faults("r1", error_rate=0.0)
    expect_status(httpx.post(f"{fleet.url('r1')}/v1/chat/completions", json=CHAT), 200)


def test_partial_error_rate_is_deterministic_for_a_seed() -> None:
    def pattern(target: SimFleet) -> list[int]:
        target.set_faults("r1", error_rate=0.5)
        url = f"{target.url('r1')}/v1/completions"
        body = {"model": "sim-model", "prompt": "x", "max_tokens": 1}
        return [httpx.post(url, json=body).status_code for _ in range(16)]

    with SimFleet(replicas=1, seed=3) as seeded:
        first = pattern(seeded)
    assert {200, 500} == set(first)
    with SimFleet(replicas=1, seed=3) as same_seed:
        assert pattern(same_seed) == first


def test_unhealthy_replica_fails_health_and_requests(fleet: SimFleet) -> None:
    fleet.set_faults("r2", unhealthy=True)
    expect_status(httpx.get(f"{fleet.url('r2')}/health"), 503)
    expect_status(httpx.post(f"{fleet.url('r2')}/v1/chat/completions", json=CHAT), 500)
    expect_status(httpx.get(f"{fleet.url('r1')}/health"), 200)
    fleet.set_faults("r2", unhealthy=False)
    expect_status(httpx.get(f"{fleet.url('r2')}/health"), 200)


async def test_stall_holds_requests_until_cleared(fleet: SimFleet) -> None:
    fleet.set_faults("r1", stall=True)
    async with httpx.AsyncClient(base_url=fleet.url("r1"), timeout=10) as client:
        pending = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        done, _ = await asyncio.wait([pending], timeout=0.3)
        assert not done  # accepted but not answered
        expect_status((await client.get("/health")), 200)  # the server itself still answers
        await client.post("/sim/faults", json={"stall": False})
        response = await asyncio.wait_for(pending, 5)
    expect_status(response, 200)


def test_die_after_chunks_drops_the_connection_mid_stream(fleet: SimFleet) -> None:
    fleet.set_faults("r1", die_after_chunks=2)
    body = {**CHAT, "max_tokens": 10, "stream": True}
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{fleet.url('r1')}/v1/chat/completions", json=body) as response,
    ):
        expect_status(response, 200)
        received.extend(line for line in response.iter_lines() if line)
    assert len(received) == 2
    assert "[DONE]" not in received[-1]
    assert fleet.set_faults("r1", die_after_chunks=None)["die_after_chunks"] is None
    with httpx.stream("POST", f"{fleet.url('r1')}/v1/chat/completions", json=body) as response:
        assert [line for line in response.iter_lines() if line][-1] == "data: [DONE]"
    assert "Traceback" not in fleet.stderr


def test_slow_factor_stretches_server_side_ttft(fleet: SimFleet) -> None:
    def ttft_of_one(name: str) -> float:
        before = parse_metrics(fleet.metrics(name)).ttft_sum or 0.0
        httpx.post(f"{fleet.url(name)}/v1/chat/completions", json=CHAT)
        after = parse_metrics(fleet.metrics(name)).ttft_sum
        assert after is not None
        return after - before

    fleet.set_faults("r2", slow_factor=40.0)  # t0 2 ms -> 80 ms
    assert ttft_of_one("r2") >= 0.08
    assert ttft_of_one("r1") < 0.05


def test_restart_empties_the_cache_and_resets_counters(fleet: SimFleet) -> None:
    url = fleet.url("r1")
    body = {"model": "sim-model", "prompt": "remember me " * 30, "max_tokens": 1}
    before = parse_metrics(fleet.metrics("r1")).requests_success or 0
    httpx.post(f"{url}/v1/completions", json=body)
    second = httpx.post(f"{url}/v1/completions", json=body).json()
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert parse_metrics(fleet.metrics("r1")).requests_success == before + 2
    restarts = httpx.get(f"{url}/sim/faults").json()["restarts"]
    assert fleet.set_faults("r1", restart=True)["restarts"] == restarts + 1
    stats = parse_metrics(fleet.metrics("r1"))
    assert (stats.requests_success, stats.prefix_queries, stats.prefix_hits) == (0, 0, 0)
    response = httpx.post(f"{url}/v1/completions", json=body).json()
    assert response["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_faults_from_the_fleet_config(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "defaults:\n"
        "  model: demo-model\n"
        "  num_gpu_blocks: 128\n"
        "replicas:\n"
        "  - name: alpha\n"
        "  - name: beta\n"
        "    speed: 0.5\n"
        "    faults: {unhealthy: true, error_rate: 0.25}\n",
        encoding="utf-8",
    )
    with SimFleet(replicas=None, config=config) as fleet:
        assert sorted(fleet.urls) == ["alpha", "beta"]
        expect_status(httpx.get(f"{fleet.url('alpha')}/health"), 200)
        expect_status(httpx.get(f"{fleet.url('beta')}/health"), 503)
        faults = httpx.get(f"{fleet.url('beta')}/sim/faults").json()
        assert (faults["slow_factor"], faults["error_rate"]) == (2.0, 0.25)
        stats = parse_metrics(fleet.metrics("alpha"))
        assert (stats.model, stats.num_blocks) == ("demo-model", 128)
