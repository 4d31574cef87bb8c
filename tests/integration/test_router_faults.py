"""Failure handling through a live router: retries before the first byte, mid-stream errors,
health checks, and cache-aware scale-out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from pcache.api import ReplicaIn
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually

MODEL = "sim-model"
CLEAR = {"error_rate": 0.0, "die_after_chunks": None, "unhealthy": False}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=4) as fleet:
        yield fleet


@pytest.fixture()
def router(sim: SimFleet, tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess(replicas={n: sim.urls[n] for n in ("r1", "r2", "r3")}, state_dir=tmp_path) as process:
        yield process
    for name in sim.urls:
        sim.set_faults(name, **CLEAR)


def _chat(router: RouterProcess, session: str, **extra: object) -> tuple[str, str]:
    raw = router.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"question from {session}"}],
        max_tokens=4,
        extra_headers={"x-session-id": session},
        **extra,
    )
    raw.parse()
    return raw.headers["x-pcache-replica"], raw.headers["x-pcache-reason"]


def test_a_failing_replica_is_retried_on_the_next_candidate(router: RouterProcess, sim: SimFleet) -> None:
    home, _ = _chat(router, "retry-me")
    sim.set_faults(home, error_rate=1.0)
    replica, reason = _chat(router, "retry-me")
    assert replica != home
    assert reason == "retry"


def test_a_stream_dying_midway_ends_with_an_openai_error_event(router: RouterProcess, sim: SimFleet) -> None:
    for name in ("r1", "r2", "r3"):
        sim.set_faults(name, die_after_chunks=2)
    stream = router.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a long story"}], max_tokens=32, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as failure:
        for chunk in stream:
            received.append(chunk)
    assert received, "the chunks before the failure reached the client"
    assert "mid-stream" in failure.value.message


def test_failed_health_checks_take_a_replica_out_and_back(router: RouterProcess, sim: SimFleet) -> None:
    sim.set_faults("r2", unhealthy=True)
    with router.admin() as admin:
        eventually(lambda: next(r for r in admin.replicas() if r.name == "r2").state == "unhealthy")
        for session in range(8):
            replica, _ = _chat(router, f"while-down-{session}")
            assert replica != "r2"
        sim.set_faults("r2", unhealthy=False)
        eventually(lambda: next(r for r in admin.replicas() if r.name == "r2").state == "healthy")


def test_scale_out_prewarms_the_prefixes_the_new_replica_owns(sim: SimFleet, tmp_path: Path) -> None:
    prefixes = [
        {
            "name": f"bot-{i}",
            "text": f"You are assistant number {i} of a large fleet of bots. " * 20,
            "copies": 1,
        }
        for i in range(12)
    ]
    three = {n: sim.urls[n] for n in ("r1", "r2", "r3")}
    with RouterProcess(replicas=three, tier1=prefixes, state_dir=tmp_path) as router, router.admin() as admin:
        before = float(_counter(sim.metrics("r4"), "vllm:prefix_cache_queries_total"))
        status = admin.add_replica(ReplicaIn(name="r4", url=sim.urls["r4"]))
        assert status.state == "healthy"
        owned = next(r for r in admin.replicas() if r.name == "r4").tier1_owned
        assert owned, "with 12 prefixes over 4 replicas the new one owns some"
        jobs = admin.prewarm_jobs()
        assert jobs and {p.prefix for p in jobs[-1].results} == set(owned)
        assert all(p.ok for p in jobs[-1].results)
        assert float(_counter(sim.metrics("r4"), "vllm:prefix_cache_queries_total")) > before
        text = next(p["text"] for p in prefixes if p["name"] == owned[0])
        raw = router.openai().chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "system", "content": text}, {"role": "user", "content": "first visit"}],
            max_tokens=2,
        )
        usage = raw.parse().usage
        assert raw.headers["x-pcache-replica"] == "r4"
        assert usage is not None and usage.prompt_tokens_details is not None
        assert (usage.prompt_tokens_details.cached_tokens or 0) > 0


def _counter(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name):
            return line.rsplit(" ", 1)[1]
    raise AssertionError(f"{name} not in metrics")
