"""Prewarm jobs: request shape, bounded concurrency, per-pair results and verification."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pcache.prewarm import PrewarmJobs, PrewarmTarget, prewarm_body


def _usage(cached: int) -> bytes:
    return json.dumps(
        {"usage": {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": cached}}}
    ).encode()


def test_prewarm_requests_have_the_shape_of_real_traffic() -> None:
    path, body = prewarm_body("SYSTEM", "chat", "m")
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "system", "content": "SYSTEM"}]
    assert body["max_tokens"] == 1 and body["model"] == "m" and body["stream"] is False
    path, body = prewarm_body("TEXT", "completion", None)
    assert path == "/v1/completions" and body["prompt"] == "TEXT" and "model" not in body


async def test_a_job_warms_every_pair_with_bounded_concurrency() -> None:
    active = 0
    peak = 0
    seen: list[tuple[str, str]] = []

    async def send(replica: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        seen.append((replica, body["messages"][0]["content"]))
        return 200, _usage(0)

    async def model_of(replica: str) -> str | None:
        return "m"

    jobs = PrewarmJobs(send, model_of)
    targets = [PrewarmTarget(f"p{i}", f"text {i}", "chat", ("r1", "r2"), "explicit") for i in range(5)]
    job = jobs.start(targets, concurrency=3, verify=False)
    assert job.state == "running" and job.total == 10
    finished = await jobs.wait(job.id, 5)
    assert finished is not None and finished.state == "done"
    assert finished.done == 10 and finished.failed == 0
    assert peak <= 3
    assert sorted(seen) == sorted((r, f"text {i}") for i in range(5) for r in ("r1", "r2"))
    assert all(pair.ok for pair in finished.results)


async def test_failures_are_per_pair_and_verification_uses_a_second_probe() -> None:
    calls: dict[str, int] = {}

    async def send(replica: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        calls[replica] = calls.get(replica, 0) + 1
        if replica == "bad":
            return 500, b'{"error": {"message": "engine exploded"}}'
        if replica == "gone":
            raise ConnectionError("refused")
        return 200, _usage(0 if calls[replica] == 1 else 64)

    async def model_of(replica: str) -> str | None:
        return None

    jobs = PrewarmJobs(send, model_of)
    job = jobs.start(
        [PrewarmTarget("p", "t", "chat", ("good", "bad", "gone"), "explicit")], concurrency=2, verify=True
    )
    finished = await jobs.wait(job.id, 5)
    assert finished is not None and finished.state == "done"
    results = {pair.replica: pair for pair in finished.results}
    assert results["good"].ok and results["good"].verified is True and results["good"].cached_tokens == 64
    assert results["bad"].ok is False and results["bad"].error == "HTTP 500: engine exploded"
    assert results["gone"].ok is False and results["gone"].error == "refused"
    assert finished.failed == 2
    assert jobs.get(job.id) is finished and jobs.all() == [finished]


async def test_a_plan_is_not_run() -> None:
    async def send(replica: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        raise AssertionError("a plan sends nothing")

    async def model_of(replica: str) -> str | None:
        return None

    jobs = PrewarmJobs(send, model_of)
    plan = jobs.plan([PrewarmTarget("p", "t", "chat", ("r1",), "top-1 of HRW ranking")])
    assert plan.state == "planned" and plan.plan[0].why == "top-1 of HRW ranking"
    assert jobs.all() == []
