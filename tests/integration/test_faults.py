"""Replica faults through a live router, seen by real clients (the official openai client and raw httpx).

Each test injects one fault with the simulator's ``POST /sim/faults`` (or points the router at a
closed port) and checks what a client sees: no error while any candidate is healthy, an
OpenAI-style error (status + body, or a final SSE error event) otherwise, never a hang, and the
replica leaving and rejoining the rotation.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pcache.api import ExplainRequest
from pcache.engines.exposition import parse_samples
from pcache.testing.http import expect_ok, expect_status
from pcache.testing.ports import free_port
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually

MODEL = "sim-model"
CLEAR = {"error_rate": 0.0, "die_after_chunks": None, "unhealthy": False, "stall": False, "slow_factor": 1.0}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=3) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def _clear_faults(sim: SimFleet) -> Iterator[None]:
    yield
    for name in sim.urls:
        sim.set_faults(name, **CLEAR)


def _closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then closed)."""
    return f"http://127.0.0.1:{free_port()}"


def _openai(router: RouterProcess, timeout: float = 10) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=timeout)


def _body(session: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"question from {session}"}],
        "max_tokens": 6,
    }
    if stream:
        body["stream"] = True
    return body


def _metric(router: RouterProcess, name: str, **labels: str) -> float:
    """Sum of a router counter's samples whose labels include ``labels``."""
    return parse_samples(httpx.get(f"{router.url}/metrics", timeout=5).text).total(name, **labels) or 0.0


def _sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]


def _mixed_traffic(router: RouterProcess, sessions: list[str]) -> tuple[int, list[str]]:
    """One request per session, alternating openai non-streamed, openai streamed and raw httpx
    streamed. Returns (requests sent, client-visible errors)."""
    client = _openai(router)
    errors: list[str] = []
    for i, session in enumerate(sessions):
        headers = {"x-session-id": session, "x-request-id": f"req-{i}"}
        try:
            if i % 3 == 0:
                reply = client.chat.completions.create(**_body(session), extra_headers=headers)
                assert reply.choices[0].message.content
            elif i % 3 == 1:
                chunks = list(client.chat.completions.create(**_body(session, True), extra_headers=headers))
                assert chunks and chunks[-1].choices[0].finish_reason == "length"
            else:
                with httpx.stream(
                    "POST",
                    f"{router.url}/v1/chat/completions",
                    json=_body(session, True),
                    headers=headers,
                    timeout=10,
                ) as response:
                    response.read()
                events = _sse_events(response)
                if response.status_code != 200 or events[-1] != "[DONE]" or '"error"' in response.text:
                    errors.append(f"{session}: HTTP {response.status_code} {response.text[-200:]}")
        except (openai.OpenAIError, httpx.HTTPError, AssertionError) as exc:
            errors.append(f"{session}: {type(exc).__name__}: {exc}")
    return len(sessions), errors


def test_a_replica_refusing_connections_is_retried_with_no_client_errors(
    sim: SimFleet, tmp_path: Path
) -> None:
    replicas = {"dead": _closed_port_url(), "r1": sim.urls["r1"], "r2": sim.urls["r2"]}
    # Slow health checks: only the proxied requests' failures can take "dead" out of rotation.
    with RouterProcess(replicas=replicas, state_dir=tmp_path, health={"interval_s": 30.0}) as router:
        sent, errors = _mixed_traffic(router, [f"refused-{i}" for i in range(24)])
        assert errors == []
        assert sent == 24
        assert _metric(router, "pcache_upstream_errors_total", replica="dead", kind="connect") >= 1
        assert _metric(router, "pcache_retries_total") >= 1
        with router.admin() as admin:
            assert next(r for r in admin.replicas() if r.name == "dead").state == "unhealthy"


def test_a_replica_answering_500_before_the_first_byte_is_retried(sim: SimFleet, tmp_path: Path) -> None:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path) as router:
        sim.set_faults("r2", error_rate=1.0)
        sent, errors = _mixed_traffic(router, [f"five-hundred-{i}" for i in range(24)])
        assert errors == []
        assert sent == 24
        assert _metric(router, "pcache_upstream_errors_total", replica="r2", kind="status") >= 1


def _sessions_homed_on(router: RouterProcess, replica: str, prefix: str, count: int = 1) -> list[str]:
    """Sessions whose home would be ``replica`` now (route explain books nothing)."""
    found = []
    with router.admin() as admin:
        for i in range(400):
            session = f"{prefix}-{i}"
            if admin.explain(ExplainRequest(body=_body(session), session=session)).replica == replica:
                found.append(session)
                if len(found) == count:
                    return found
    raise AssertionError(f"no session of {prefix!r} is homed on {replica}")


def _home_of(router: RouterProcess, session: str) -> str:
    with router.admin() as admin:
        decision = admin.explain(ExplainRequest(body=_body(session), session=session))
    assert decision.replica is not None
    return decision.replica


def test_a_replica_dying_mid_stream_ends_the_stream_with_an_error_event_and_is_avoided(
    sim: SimFleet, tmp_path: Path
) -> None:
    health = {"interval_s": 0.5, "failures": 1, "recoveries": 2}
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path, health=health) as router:
        session = "dies-midway"
        home = _home_of(router, session)
        sim.set_faults(home, die_after_chunks=2)
        with httpx.stream(  # a stream left hanging would end in the client's ReadTimeout instead
            "POST",
            f"{router.url}/v1/chat/completions",
            json=_body(session, True),
            headers={"x-session-id": session},
            timeout=30,
        ) as response:
            response.read()
        assert response.status_code == 200 and response.headers["x-pcache-replica"] == home
        events = _sse_events(response)
        assert len(events) == 4, events  # two chunks from the replica, the error event, [DONE]
        error = json.loads(events[-2])["error"]
        assert error["type"] == "upstream_error" and error["code"] == "upstream_disconnected"
        assert events[-1] == "[DONE]"

        with router.admin() as admin:
            assert next(r for r in admin.replicas() if r.name == home).state == "unhealthy"
        chunks = list(
            _openai(router).chat.completions.create(
                **_body(session, True), extra_headers={"x-session-id": session}
            )
        )
        assert chunks[-1].choices[0].finish_reason == "length", (
            "the next request went elsewhere and completed"
        )
        with router.admin() as admin:
            assert next(r for r in admin.replicas() if r.name == home).requests_total == 1

        sim.set_faults(home, die_after_chunks=None)
        with router.admin() as admin:
            eventually(lambda: next(r for r in admin.replicas() if r.name == home).state == "healthy")

        # Back in rotation: a session homed there is served there, and the official client sees
        # the next mid-stream death as an APIError, not a truncated success.
        again = _sessions_homed_on(router, home, "back")[0]
        raw = _openai(router).chat.completions.with_raw_response.create(
            **_body(again), extra_headers={"x-session-id": again}
        )
        assert raw.headers["x-pcache-replica"] == home
        sim.set_faults(home, die_after_chunks=1)
        stream = _openai(router).chat.completions.create(
            **_body(again, True), extra_headers={"x-session-id": again}
        )
        with pytest.raises(openai.APIError) as failure:
            for _ in stream:
                pass
        assert "mid-stream" in failure.value.message


def test_every_replica_down_gets_an_explicit_error_promptly(tmp_path: Path) -> None:
    replicas = {"a": _closed_port_url(), "b": _closed_port_url()}
    upstream = {"connect_timeout_s": 1.0}
    with RouterProcess(replicas=replicas, state_dir=tmp_path, upstream=upstream) as router:
        statuses = []
        for i in range(6):  # an answer, not the client's own timeout (a router left waiting would hit it)
            response = httpx.post(f"{router.url}/v1/chat/completions", json=_body(f"down-{i}"), timeout=30)
            error = response.json()["error"]
            assert error["message"] and error["type"] in ("upstream_error", "service_unavailable")
            statuses.append((response.status_code, error["code"]))
        # 503 from the first request, and every one after: once both are marked down, panic mode
        # still tries them (pcache.router.outlier), and every attempt is refused.
        assert set(statuses) == {(503, "no_replica_reachable")}, statuses
        with pytest.raises(openai.InternalServerError) as failure:
            _openai(router).chat.completions.create(**_body("down-openai"))
        assert failure.value.status_code == 503


def test_all_replicas_stalled_time_out_at_the_configured_limit(sim: SimFleet, tmp_path: Path) -> None:
    two = {"r1": sim.urls["r1"], "r2": sim.urls["r2"]}
    upstream = {"read_timeout_s": 1.0, "retries": 1}
    with RouterProcess(replicas=two, state_dir=tmp_path, upstream=upstream) as router:
        for name in two:
            sim.set_faults(name, stall=True)
        started = time.monotonic()
        response = httpx.post(f"{router.url}/v1/chat/completions", json=_body("stalled"), timeout=20)
        elapsed = time.monotonic() - started
        # One attempt cut at read_timeout_s: a timed-out request is not retried (it may still run).
        assert elapsed >= 1.0, elapsed
        expect_status(response, 504)
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert _router_counter(router, "pcache_retries_total") == 0.0


def test_a_slow_replica_times_out_at_the_limit_and_new_sessions_are_steered_away(
    sim: SimFleet, tmp_path: Path
) -> None:
    upstream = {"read_timeout_s": 2.0, "retry_on_timeout": True}
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path, upstream=upstream) as router:
        slow = "r1"
        # Sessions whose home would be r1 on an idle fleet (explain books nothing).
        homed = _sessions_homed_on(router, slow, "homed", count=8)
        stuck, fresh = homed[:2], homed[2:]
        sim.set_faults(slow, stall=True)
        results: dict[str, tuple[int, str, float]] = {}

        def send(session: str) -> None:
            started = time.monotonic()
            response = httpx.post(
                f"{router.url}/v1/chat/completions",
                json=_body(session),
                headers={"x-session-id": session},
                timeout=15,
            )
            results[session] = (
                response.status_code,
                response.headers.get("x-pcache-replica", ""),
                time.monotonic() - started,
            )

        threads = [threading.Thread(target=send, args=(s,)) for s in stuck]
        for thread in threads:
            thread.start()
        with router.admin() as admin:
            eventually(lambda: next(r for r in admin.replicas() if r.name == slow).in_flight >= 1, 5)
        # r1 holds requests it does not answer: sessions that would live there go elsewhere.
        placed = []
        for session in fresh:
            raw = _openai(router).chat.completions.with_raw_response.create(
                **_body(session), extra_headers={"x-session-id": session}
            )
            placed.append(raw.headers["x-pcache-replica"])
        for thread in threads:
            thread.join(15)
        assert slow not in placed, placed
        # The requests stuck on r1 were cut at read_timeout_s and retried elsewhere: slow, but served.
        cut = [(s, r) for s, r in results.items() if r[2] >= 2.0]
        assert cut, results
        for session, (status, replica, _elapsed) in results.items():
            assert status == 200 and replica != slow, (session, status, replica)
        assert _router_counter(router, "pcache_retries_total") >= len(cut)


def test_a_healthy_replica_the_policy_passed_over_still_takes_the_retry_rather_than_an_error(
    sim: SimFleet, tmp_path: Path
) -> None:
    """Regression (found by bench/soak.py): retries went only to the policy's usable candidates, so
    when every one of them failed, the client got the last one's 500 although a healthy replica,
    excluded only as over the load bound or (here) as not an owner of the request's Tier-1 prefix,
    could have served it."""
    system = "You are the shipping assistant of ACME. Quote the tracking page for every answer. " * 8
    tier1 = [{"name": "shipping", "text": system, "copies": 2}]
    body = {**_body("newcomer"), "messages": [{"role": "system", "content": system}, *_body("x")["messages"]]}
    with RouterProcess(
        replicas=sim.urls, tier1=tier1, state_dir=tmp_path, health={"interval_s": 30.0}
    ) as router:
        with router.admin() as admin:
            decision = admin.explain(ExplainRequest(body=body, session="newcomer"))
        passed_over = [
            c.replica for c in decision.candidates if c.excluded in ("not_owner", "over_load_bound")
        ]
        usable = [c.replica for c in decision.candidates if c.excluded is None]
        assert len(passed_over) == 1 and len(usable) == 2, decision  # the setup: two owners, one other
        for name in usable:
            sim.set_faults(name, error_rate=1.0)
        response = httpx.post(
            f"{router.url}/v1/chat/completions", json=body, headers={"x-session-id": "newcomer"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-pcache-replica"] == passed_over[0]
        assert response.headers["x-pcache-reason"] == "retry"


def _router_counter(router: RouterProcess, name: str) -> float:
    """One unlabelled sample of the router's own ``/metrics``."""
    text = expect_ok(httpx.get(f"{router.url}/metrics", timeout=10)).text
    values = [float(line.split()[1]) for line in text.splitlines() if line.split(" ")[0] == name]
    assert len(values) == 1, f"{name} not exposed once: {values}"
    return values[0]
