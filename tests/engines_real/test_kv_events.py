"""The precise index against two real vLLM engines: their KV events ingested (live and by replay),
the router's token ids equal to the engine's, an engine restart forgotten, and the bar: predicted
cached tokens equal the engine's report for >= 95% of a multi-session chat workload's requests
(>= 90% while evictions are frequent), the approximate index's figure printed beside it."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import httpx

from pcache.api import CandidateOut, ExplainRequest
from pcache.kv.local_tokenizer import LocalTokenizer
from tests.engines_real.engine import MODEL_NAME
from tests.engines_real.stack import ENGINE_START_TIMEOUT_S, EnginePair, make_router
from tests.engines_real.traffic import prose
from tests.harness.router import RouterProcess
from tests.harness.wait import eventually

# Sixteen sessions with a system prompt each, about 7 blocks of 128 tokens apiece: twice what the two
# 48-block caches hold, so the engines evict all the time.
EVICTING: dict[str, Any] = {"sessions": 16, "turns": 3, "system_chars": 2400, "seed": 2, "systems": 16}


def _precise_router(fleet: EnginePair, state_dir: Path, *, precise: bool = True) -> RouterProcess:
    options = {
        engine.name: {
            "kv_events": {
                "endpoint": engine.kv_events.endpoint,
                "replay_endpoint": engine.kv_events.replay_endpoint,
                "topic": engine.kv_events.topic,
            }
        }
        for engine in fleet.all
    }
    if not precise:
        return make_router(fleet, state_dir)
    return make_router(fleet, state_dir, replica_options=options, tokenizers={MODEL_NAME: fleet.e1.model_dir})


def _rows(router: RouterProcess) -> dict[str, Any]:
    with router.admin() as admin:
        return {row.name: row for row in admin.status().replicas}


def _all_precise(router: RouterProcess) -> bool:
    return all(row.cache_index == "precise" for row in _rows(router).values())


def _engine_tokens(url: str, body: dict[str, Any]) -> list[int]:
    response = httpx.post(f"{url}/tokenize", json=body, timeout=60)
    assert response.status_code == 200, f"/tokenize: {response.status_code} {response.text}"
    return list(response.json()["tokens"])


def test_the_routers_token_ids_equal_the_engines_tokenize(fleet: EnginePair) -> None:
    tokenizer = LocalTokenizer(fleet.e1.model_dir)
    conversations = [
        [{"role": "user", "content": prose("one", 300)}],
        [
            {"role": "system", "content": "You are terse.\nAnswer  with\ttabs, émojis 🙂 and code: `x = 1`."},
            {"role": "user", "content": prose("two", 500)},
            {"role": "assistant", "content": "  spaced reply  "},
            {
                "role": "user",
                "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}],
            },
        ],
    ]
    for messages in conversations:
        body = {"model": MODEL_NAME, "messages": messages}
        ours = tokenizer.tokens(body)
        assert ours is not None and list(ours.token_ids) == _engine_tokens(fleet.e1.url, body)
    for prompt in (prose("three", 400), "  leading spaces\nand a newline"):
        body = {"model": MODEL_NAME, "prompt": prompt}
        ours = tokenizer.tokens(body)
        assert ours is not None and list(ours.token_ids) == _engine_tokens(fleet.e1.url, body)


def _chat_workload(
    router: RouterProcess, sessions: int, turns: int, system_chars: int, seed: int, systems: int = 3
) -> tuple[int, int]:
    """Sessions take turns one request at a time (``systems`` system prompts shared among them);
    returns (exact predictions, requests)."""
    rng = random.Random(seed)
    prompts = [prose(f"system-{seed}-{i}", system_chars) for i in range(systems)]
    histories = {s: [{"role": "system", "content": prompts[s % systems]}] for s in range(sessions)}
    exact = total = 0
    with httpx.Client(base_url=router.url, timeout=120) as http:
        for turn, session in itertools.product(range(turns), range(sessions)):
            messages = histories[session]
            messages.append(
                {"role": "user", "content": prose(f"{seed}-{session}-{turn}", rng.randint(150, 400))}
            )
            response = http.post(
                "/v1/chat/completions",
                json={"model": MODEL_NAME, "messages": messages, "max_tokens": 8, "temperature": 0},
                headers={"x-session-id": f"s{seed}-{session}"},
            )
            assert response.status_code == 200, f"{response.status_code} {response.text}"
            body = response.json()
            predicted = int(response.headers["x-pcache-predicted-cached-tokens"])
            exact += predicted == body["usage"]["prompt_tokens_details"]["cached_tokens"]
            total += 1
            messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"] or ""})
            if len(messages) > 9:  # keep within max_model_len: a new conversation on the same system
                histories[session] = [messages[0]]
    return exact, total


def test_predicted_cached_tokens_equal_the_engines_on_a_multi_session_chat_workload(
    fleet: EnginePair, tmp_path: Path
) -> None:
    figures: dict[str, tuple[int, int]] = {}
    with _precise_router(fleet, tmp_path / "precise") as router:
        eventually(lambda: _all_precise(router), timeout_s=60, what="both engines precise")
        figures["precise, cache fits"] = _chat_workload(router, sessions=4, turns=4, system_chars=900, seed=1)
        removed_before = sum(row.kv_events["removed_blocks"] for row in _rows(router).values())
        figures["precise, evictions"] = _chat_workload(router, **EVICTING)
        rows = _rows(router)
        removed = sum(row.kv_events["removed_blocks"] for row in rows.values()) - removed_before
    for engine in fleet.all:
        engine.reset_prefix_cache()
    with _precise_router(fleet, tmp_path / "approximate", precise=False) as router:
        figures["approximate, cache fits"] = _chat_workload(
            router, sessions=4, turns=4, system_chars=900, seed=1
        )
        figures["approximate, evictions"] = _chat_workload(router, **EVICTING)
    print("\nindex, workload             exact / requests")
    for name, (exact, total) in figures.items():
        print(f"{name:<28} {exact:>4} / {total:<4} {exact / total:6.1%}")
    print(f"blocks the engines evicted during the eviction workload: {removed}")
    # Both engines' caches (2 x 48 blocks) turned over at least once.
    assert removed >= 96, "the eviction workload should evict often"
    exact, total = figures["precise, cache fits"]
    assert exact / total >= 0.95
    exact, total = figures["precise, evictions"]
    assert exact / total >= 0.90
    for row in rows.values():
        assert row.kv_events["batches"] > 0 and row.cached_prefix_tokens and row.predictions > 0


def test_history_published_before_the_router_started_arrives_by_replay(
    fleet: EnginePair, tmp_path: Path
) -> None:
    messages = [{"role": "user", "content": prose("before-router", 1200)}]
    direct = httpx.post(
        f"{fleet.e1.url}/v1/chat/completions",
        json={"model": MODEL_NAME, "messages": messages, "max_tokens": 2},
        timeout=120,
    )
    assert direct.status_code == 200, direct.text
    with _precise_router(fleet, tmp_path / "router") as router:
        eventually(lambda: _all_precise(router), timeout_s=60, what="both engines precise")
        events = eventually(
            lambda: _rows(router)["e1"].kv_events if _rows(router)["e1"].kv_events["cached_blocks"] else None,
            timeout_s=30,
            what="e1's earlier blocks replayed",
        )
        assert events["replays"] >= 1 and events["mode"] == "connect"  # the engine binds its ipc endpoint


def test_an_engine_restart_is_seen_and_its_blocks_forgotten(fleet: EnginePair, tmp_path: Path) -> None:
    messages = [{"role": "user", "content": prose("restart", 1200)}]
    body = {"model": MODEL_NAME, "messages": messages, "max_tokens": 2}
    with _precise_router(fleet, tmp_path / "router") as router:
        eventually(lambda: _all_precise(router), timeout_s=60, what="both engines precise")
        with httpx.Client(base_url=router.url, timeout=120) as http:
            first = http.post("/v1/chat/completions", json=body, headers={"x-session-id": "restart"})
            assert first.status_code == 200, first.text
            name = first.headers["x-pcache-replica"]
            eventually(lambda: _rows(router)[name].kv_events["cached_blocks"] > 0, what="the prompt indexed")
            engine = fleet[name]
            engine.kill()
            eventually(
                lambda: _rows(router)[name].cache_index == "approximate",
                timeout_s=10,
                what="the dead engine off the precise index",
            )
            engine.start().wait_ready(ENGINE_START_TIMEOUT_S)
            eventually(
                lambda: _rows(router)[name].cache_index == "precise", timeout_s=60, what="precise again"
            )
            assert _rows(router)[name].kv_events["cached_blocks"] == 0  # the old engine's blocks are gone

            # The session itself moved to the surviving engine while this one was down (and the
            # outlier detector keeps a restarted replica out for its back-off), so ask the router
            # what it predicts for the restarted engine instead of waiting for traffic to go back.
            def restarted_candidate() -> CandidateOut | None:
                with router.admin() as admin:
                    decision = admin.explain(ExplainRequest(body=body, session="restart-probe"))
                candidate = next(c for c in decision.candidates if c.replica == name)
                return candidate if candidate.cache_source == "precise" else None  # routable again

            restarted = eventually(restarted_candidate, timeout_s=90, what="the restarted engine routable")
            assert restarted.cached_tokens == 0, restarted
            direct = httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=120)
            assert direct.status_code == 200, f"{direct.status_code} {direct.text}"
            assert direct.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
