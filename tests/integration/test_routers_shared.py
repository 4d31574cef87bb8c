"""Two routers sharing one Redis: operator state made through either is live on both, a drain keeps
both routers' traffic off the replica, a session whose turns alternate between routers stays on one
replica, concurrent drains through both never leave the fleet empty, and a store outage never fails
a request while operator writes are refused clearly and the state converges when it returns."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pcache.api import ExplainRequest, PinIn
from pcache.client import ApiError, Refused
from pcache_cli.main import app
from tests.harness.redis import RedisServer
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "sim-model"
BILLING = "You are the billing assistant of Globex. Explain invoices step by step. " * 12


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=3) as fleet:
        yield fleet


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture()
def routers(sim: SimFleet, redis_server: RedisServer, tmp_path: Path) -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        for name in ("a", "b"):
            started.append(
                RouterProcess(
                    replicas=sim.urls,
                    state_dir=tmp_path / name,
                    state=redis_server.url,
                    startup_timeout_s=90.0,  # two routers starting on a busy 2-core machine
                ).start()
            )
        yield started
    finally:
        for router in started:
            router.stop()


def _turn(router: RouterProcess, session: str, turn: int) -> str:
    """One chat turn through ``router``; the replica that served it."""
    messages: list[dict[str, str]] = [{"role": "system", "content": BILLING}]
    for earlier in range(turn):
        messages += [
            {"role": "user", "content": f"question {earlier} of {session}"},
            {"role": "assistant", "content": f"answer {earlier}"},
        ]
    messages.append({"role": "user", "content": f"question {turn} of {session}"})
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 2},
        headers={"x-session-id": session},
        timeout=30,
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response.headers["x-pcache-replica"]


def test_a_pin_made_through_one_router_is_in_the_others_pins(routers: list[RouterProcess]) -> None:
    a, b = routers
    with a.admin() as admin_a, b.admin() as admin_b:
        admin_a.pin("billing", PinIn(text=BILLING, replicas=["r2"]))
        pinned = eventually(
            lambda: [p for p in admin_b.pins() if p.name == "billing"], what="router B to see the pin"
        )
        assert pinned[0].replicas == ["r2"] and pinned[0].owners == ["r2"]
        admin_b.unpin("billing")
        eventually(lambda: admin_a.pins() == [], what="router A to see the unpin")


def test_a_drain_made_through_one_router_keeps_the_others_traffic_off_the_replica(
    routers: list[RouterProcess],
) -> None:
    a, b = routers
    with a.admin() as admin_a, b.admin() as admin_b:
        admin_a.drain("r1")
        eventually(
            lambda: {r.name: r.state for r in admin_b.replicas()}["r1"] in ("draining", "drained"),
            what="router B to see the drain",
        )
        served = {_turn(b, f"after-drain-{i}", 0) for i in range(12)}
        assert "r1" not in served, served
        admin_b.undrain("r1")
        eventually(
            lambda: {r.name: r.state for r in admin_a.replicas()}["r1"] == "healthy",
            what="router A to see the undrain",
        )


def test_a_session_alternating_between_routers_stays_on_one_replica(routers: list[RouterProcess]) -> None:
    served = [_turn(routers[turn % 2], "alternating", turn) for turn in range(6)]
    assert len(set(served)) == 1, served


def _body(session: str, turn: int = 0) -> dict[str, object]:
    messages = [{"role": "system", "content": BILLING}, {"role": "user", "content": f"q{turn} of {session}"}]
    return {"model": MODEL, "messages": messages, "max_tokens": 2}


def test_a_home_given_by_one_router_is_the_others_session_home(routers: list[RouterProcess]) -> None:
    a, b = routers
    home = _turn(a, "shared-home", 0)
    with b.admin() as admin_b:
        decision = eventually(
            lambda: (
                (
                    d := admin_b.explain(ExplainRequest(body=_body("shared-home", 1), session="shared-home"))
                ).reason
                == "session_home"
                and d
            ),
            what="router B to know the session's home",
        )
    assert decision.replica == home


def test_requests_in_flight_through_one_router_count_in_the_others_load(
    routers: list[RouterProcess], sim: SimFleet
) -> None:
    a, b = routers
    with a.admin() as admin_a:
        admin_a.pin("billing", PinIn(text=BILLING, replicas=["r1"]))
    sim.set_faults("r1", stall=True)
    done = threading.Event()

    def stuck() -> None:
        try:
            httpx.post(f"{a.url}/v1/chat/completions", json=_body("stuck"), timeout=60)
        finally:
            done.set()

    worker = threading.Thread(target=stuck)
    try:
        worker.start()
        with b.admin() as admin_b:
            eventually(
                lambda: any(
                    c.replica == "r1" and c.load >= 1
                    for c in admin_b.explain(ExplainRequest(body=_body("probe"))).candidates
                ),
                what="router B to count A's request in flight on r1",
            )
    finally:
        sim.set_faults("r1", stall=False)
        worker.join(60)
    assert done.is_set()


def _cli(tmp_path: Path, *args: str) -> str:
    env = {"NO_COLOR": "1", "PCACHE_CONFIG": "", "XDG_CONFIG_HOME": str(tmp_path), "PCACHE_OUTPUT": ""}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_router_lists_every_router_and_flags_a_lost_one(
    routers: list[RouterProcess], tmp_path: Path
) -> None:
    a, b = routers
    with a.admin() as admin_a:
        listed = eventually(
            lambda: len(rows := admin_a.routers()) == 2 and rows, what="A to list both routers"
        )
        assert listed[0].this_router and listed[0].url == a.url
        assert listed[1].url == b.url and not listed[1].lost and not listed[1].this_router
        rows = json.loads(_cli(tmp_path, "--router", a.admin_url, "routers", "-o", "json"))
        assert [(r["url"], r["lost"]) for r in rows] == [(a.url, False), (b.url, False)]
        b.kill()
        eventually(lambda: admin_a.routers()[1].lost, what="A to flag the killed router lost")
    table = _cli(tmp_path, "--router", a.admin_url, "routers")
    assert "LOST" in table and b.url in table


def test_drains_of_the_last_two_replicas_through_two_routers_at_once_leave_one_routable(
    routers: list[RouterProcess],
) -> None:
    a, b = routers
    with a.admin() as admin_a:
        admin_a.drain("r3")
    with b.admin() as admin_b:
        eventually(
            lambda: {r.name: r.state for r in admin_b.replicas()}["r3"] != "healthy",
            what="router B to see r3 drained",
        )

    def drain(router: RouterProcess, name: str) -> object:
        with router.admin() as admin:
            try:
                return admin.drain(name)
            except ApiError as exc:
                return exc

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(drain, [a, b], ["r1", "r2"]))
    refused = [r for r in results if isinstance(r, Refused)]
    assert len(refused) == 1, results
    assert refused[0].status == 409 and refused[0].code == "last_routable"
    for router in (a, b):
        states = _wait_for_one_routable(router)
        assert sum(v == "healthy" for v in states.values()) == 1, states


def _wait_for_one_routable(router: RouterProcess) -> dict[str, str]:
    """The router's replica states once r3 is not healthy and exactly one replica is."""
    with router.admin() as admin:
        return eventually(
            lambda: (
                (s := {r.name: str(r.state) for r in admin.replicas()})["r3"] != "healthy"
                and sum(v == "healthy" for v in s.values()) == 1
                and s
            ),
            what="both routers to agree on one routable replica",
        )


def test_a_store_outage_fails_no_request_refuses_writes_and_converges(
    routers: list[RouterProcess], redis_server: RedisServer
) -> None:
    a, b = routers
    redis_server.stop()
    with a.admin() as admin_a:
        eventually(lambda: admin_a.status().router.state_error is not None, what="A to notice the outage")
        for turn in range(4):  # both routers keep serving with their last known state
            _turn(a, "during-outage", turn)
            _turn(b, "during-outage-b", turn)
        with pytest.raises(ApiError) as refused:
            admin_a.pin("billing", PinIn(text=BILLING, copies=1))
        assert refused.value.status == 503 and refused.value.code == "state_unavailable"
        assert admin_a.pins() == []  # refused is not applied either
        assert any("state store unreachable" in c for c in admin_a.status().callouts)
    redis_server.start()
    with a.admin() as admin_a, b.admin() as admin_b:
        eventually(lambda: admin_a.status().router.state_error is None, what="A to see the store again")
        admin_a.pin("billing", PinIn(text=BILLING, copies=1))
        eventually(lambda: [p.name for p in admin_b.pins()] == ["billing"], what="B to converge")
        assert admin_b.status().router.state_error is None
