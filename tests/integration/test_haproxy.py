"""Three routers behind a real HAProxy, sharing a real redis-server: sessions keep one replica
whichever router gets each turn, a router SIGKILLed mid-run fails no non-streamed request (HAProxy
retries on another router) while its in-flight streams end in an error, and a Redis outage under
load fails no request, refuses an operator write clearly and converges when Redis is back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pcache.api import PinIn
from pcache.client import ApiError
from tests.harness.haproxy import HAProxy
from tests.harness.redis import RedisServer
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "sim-model"
SYSTEMS = [
    f"You are assistant number {i} of Globex. Answer in the house style, cite the handbook. " * 10
    for i in range(3)
]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=3, inter_token_ms=20) as fleet:
        yield fleet


@pytest.fixture()
def stack(sim: SimFleet, tmp_path: Path) -> Iterator[tuple[HAProxy, list[RouterProcess], RedisServer]]:
    routers: list[RouterProcess] = []
    with RedisServer(tmp_path / "redis") as redis_server:
        try:
            for name in ("a", "b", "c"):
                routers.append(
                    RouterProcess(
                        replicas=sim.urls,
                        state_dir=tmp_path / name,
                        state=redis_server.url,
                        startup_timeout_s=90.0,  # three routers starting on a busy 2-core machine
                    ).start()
                )
            with HAProxy({r.state_dir.name: r.url for r in routers}, tmp_path / "haproxy") as lb:
                yield lb, routers, redis_server
        finally:
            for router in routers:
                router.stop()


def _messages(session: int, turn: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEMS[session % len(SYSTEMS)]}]
    for earlier in range(turn):
        messages += [
            {"role": "user", "content": f"session {session} question {earlier}: " + "details " * 30},
            {"role": "assistant", "content": f"answer {earlier}"},
        ]
    messages.append({"role": "user", "content": f"session {session} question {turn}: " + "details " * 30})
    return messages


def _ask(lb: HAProxy, session: int, turn: int, max_tokens: int = 2) -> httpx.Response:
    response = httpx.post(
        f"{lb.url}/v1/chat/completions",
        json={"model": MODEL, "messages": _messages(session, turn), "max_tokens": max_tokens},
        headers={"x-session-id": f"s{session}"},
        timeout=60,
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response


def _session(lb: HAProxy, session: int, turns: int) -> list[str]:
    return [_ask(lb, session, turn).headers["x-pcache-replica"] for turn in range(turns)]


def test_sessions_through_haproxy_keep_one_replica_across_three_routers(
    stack: tuple[HAProxy, list[RouterProcess], RedisServer],
) -> None:
    lb, routers, _ = stack
    with ThreadPoolExecutor(4) as pool:
        served = list(pool.map(lambda s: _session(lb, s, 5), range(8)))
    moved = {s: replicas for s, replicas in enumerate(served) if len(set(replicas)) != 1}
    assert moved == {}, f"sessions that changed replica: {moved}"
    for router in routers:  # round-robin: every router took turns, so homes crossed routers
        with router.admin() as admin:
            assert admin.status().router.requests_total > 0


def _stream(lb: HAProxy, session: int) -> str:
    """A long stream: 'done' if it ended with [DONE], else the error that ended it."""
    body = {"model": MODEL, "messages": _messages(session, 0), "max_tokens": 400, "stream": True}
    try:
        with httpx.stream("POST", f"{lb.url}/v1/chat/completions", json=body, timeout=60) as response:
            if response.status_code != 200:
                return f"http {response.status_code}"
            last = ""
            for line in response.iter_lines():
                if line.strip():
                    last = line.strip()
            return "done" if last == "data: [DONE]" else f"ended without [DONE] after {last[:60]!r}"
    except httpx.HTTPError as exc:
        return f"error {type(exc).__name__}"


def test_a_router_killed_mid_run_fails_no_non_streamed_request_and_cuts_its_streams(
    stack: tuple[HAProxy, list[RouterProcess], RedisServer],
) -> None:
    lb, routers, _ = stack
    victim = routers[1]
    with victim.admin() as admin:
        eventually(lambda: len(admin.routers()) == 3, what="all three routers to be members")
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def steady(worker: int) -> None:
        turn = 0
        while not stop.is_set():
            try:
                _ask(lb, 100 + worker, turn % 3)
                done[0] += 1
            except (AssertionError, httpx.HTTPError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            turn += 1

    with ThreadPoolExecutor(9) as pool:
        streams = [pool.submit(_stream, lb, 200 + i) for i in range(6)]  # round-robin: 2 per router
        with victim.admin() as admin:
            eventually(lambda: admin.status().all.in_flight >= 1, what="a stream in flight on the victim")
        workers = [pool.submit(steady, w) for w in range(3)]
        eventually(lambda: done[0] >= 3, what="steady requests to flow")
        victim.kill()
        before = done[0]
        eventually(lambda: done[0] >= before + 15, timeout_s=60, what="more requests after the kill")
        stop.set()
        for worker in workers:
            worker.result()
        endings = [s.result() for s in streams]
    assert failures == [], failures
    assert all(e == "done" or e.startswith(("error", "ended without")) for e in endings), endings
    assert any(e != "done" for e in endings), f"no stream was cut by the kill: {endings}"


def test_a_redis_outage_under_load_fails_no_request_and_refuses_writes_clearly(
    stack: tuple[HAProxy, list[RouterProcess], RedisServer],
) -> None:
    lb, routers, redis_server = stack
    redis_server.stop()
    with routers[0].admin() as admin:
        eventually(lambda: admin.status().router.state_error is not None, what="the outage to be seen")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda s: _session(lb, 300 + s, 3), range(4)))  # every turn asserts a 200
        with pytest.raises(ApiError) as refused:
            admin.pin("handbook", PinIn(text=SYSTEMS[0], copies=1))
        assert refused.value.status == 503 and "unreachable" in refused.value.message
    redis_server.start()
    with routers[0].admin() as admin:
        eventually(lambda: admin.status().router.state_error is None, what="the store to be back")
        admin.pin("handbook", PinIn(text=SYSTEMS[0], copies=1))
    for router in routers:
        _wait_for_pins(router, ["handbook"])


def _wait_for_pins(router: RouterProcess, names: list[str]) -> None:
    with router.admin() as admin:
        eventually(lambda: [p.name for p in admin.pins()] == names, what=f"{router.url} to list {names}")
