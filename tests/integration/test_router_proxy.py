"""The router as a real process in front of the simulator, driven by the official openai client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcache.testing.http import expect_status
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

MODEL = "sim-model"
SYSTEM = "You are the support assistant of ACME Corp. " * 40  # ~1.7 kB: many routing blocks


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=4) as fleet:
        yield fleet


@pytest.fixture()
def router(sim: SimFleet, tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path) as process:
        yield process


def test_non_streamed_chat_is_proxied_with_routing_headers(router: RouterProcess) -> None:
    client = router.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-pcache-replica"] in {"r1", "r2", "r3", "r4"}
    assert raw.headers["x-pcache-reason"]
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


def test_streamed_chat_passes_chunks_through(router: RouterProcess) -> None:
    client = router.openai()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tell me a story"}],
        stream=True,
        max_tokens=8,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 2
    assert text
    assert chunks[-1].usage is not None


def test_multi_turn_session_stays_on_its_home(router: RouterProcess) -> None:
    client = router.openai()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "first question"}]
    homes = set()
    for turn in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, extra_headers={"x-session-id": "session-42"}
        )
        homes.add(raw.headers["x-pcache-replica"])
        reply = raw.parse().choices[0].message.content or ""
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": f"follow-up {turn}"},
        ]
    assert len(homes) == 1


def test_admin_status_lists_every_replica(router: RouterProcess) -> None:
    with router.admin() as admin:
        snapshot = admin.status()
        replicas = admin.replicas()
    assert [r.name for r in snapshot.replicas] == ["r1", "r2", "r3", "r4"]
    assert {r.name for r in replicas} == {"r1", "r2", "r3", "r4"}
    assert snapshot.router.policy == "tiered"
    assert all(r.state == "healthy" for r in replicas)


def test_bad_requests_get_openai_style_errors(router: RouterProcess) -> None:
    bad_json = httpx.post(f"{router.url}/v1/chat/completions", content=b"{nope", timeout=5)
    expect_status(bad_json, 400)
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    empty = httpx.post(f"{router.url}/v1/chat/completions", json={"model": "m", "messages": []}, timeout=5)
    expect_status(empty, 400)
    assert "messages" in empty.json()["error"]["message"]


def test_models_are_merged_from_replicas(router: RouterProcess) -> None:
    models = router.openai().models.list()
    assert [m.id for m in models.data]


def test_other_v1_paths_pass_through_to_a_replica(router: RouterProcess) -> None:
    response = httpx.get(f"{router.url}/v1/models/{MODEL}?probe=1", timeout=5)
    assert response.headers["x-pcache-replica"] in {"r1", "r2", "r3", "r4"}
    expect_status(response, 200, 404)  # whatever the replica answers, passed through


def test_router_metrics_count_requests_by_replica_and_reason(router: RouterProcess) -> None:
    router.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    text = httpx.get(f"{router.url}/metrics", timeout=5).text
    assert 'pcache_requests_total{reason="' in text
    assert "pcache_decision_seconds_bucket" in text
    assert 'pcache_replica_state{replica="r1",state="healthy"} 1.0' in text
