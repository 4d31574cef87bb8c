"""The precise index end to end: simulated engines publish KV events, the router ingests them,
routes on them and predicts every request's cached tokens exactly; events that stop, and an engine
restart, are handled. Real processes and real ZMQ/HTTP sockets on loopback."""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration

MODEL = "sim-model"
HEALTH_INTERVAL_S = 0.5


def _sim_config(path: Path, num_gpu_blocks: int) -> Path:
    events = {"endpoint": "tcp://127.0.0.1:*", "replay_endpoint": "tcp://127.0.0.1:*", "topic": "kv-events"}
    document = {
        "defaults": {"block_size": 16, "num_gpu_blocks": num_gpu_blocks, "kv_events": events},
        "replicas": [{"name": "r1"}, {"name": "r2"}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _engine_endpoints(sim: SimFleet) -> dict[str, dict[str, Any]]:
    """Each replica's kv_events entry for the router, from the engine's /kv_event_sources. The
    engine bound a wildcard, so the router config names it as vLLM would (``tcp://*:PORT``)."""
    options: dict[str, dict[str, Any]] = {}
    for name, url in sim.urls.items():
        response = httpx.get(f"{url}/kv_event_sources", timeout=10)
        assert response.status_code == 200, response.text
        source = response.json()["0"]
        port = source["endpoint"].rsplit(":", 1)[1]
        replay_port = source["replay_endpoint"].rsplit(":", 1)[1]
        options[name] = {
            "kv_events": {
                "endpoint": f"tcp://*:{port}",
                "replay_endpoint": f"tcp://*:{replay_port}",
                "topic": source["topic"],
            }
        }
    return options


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SimFleet]:
    with SimFleet(replicas=None, config=_sim_config(tmp_path / "fleet.yaml", num_gpu_blocks=160)) as sim:
        yield sim


def _router(sim: SimFleet, state_dir: Path, precise: bool) -> RouterProcess:
    return RouterProcess(
        sim.urls,
        state_dir=state_dir,
        replica_options=_engine_endpoints(sim) if precise else None,
        health={"interval_s": HEALTH_INTERVAL_S},
    )


def _status(router: RouterProcess) -> Any:
    with router.admin() as admin:
        return admin.status()


def _precise(router: RouterProcess) -> dict[str, str]:
    return {row.name: row.cache_index for row in _status(router).replicas}


def _chat_workload(base_url: str, sessions: int, turns: int, seed: int) -> tuple[int, int]:
    """Multi-session chat; returns (requests whose predicted cached tokens equal the engine's, all)."""
    rng = random.Random(seed)
    systems = [f"You are helper {i}. Answer in one line and cite the manual. " * 12 for i in range(3)]
    histories = {s: [{"role": "system", "content": systems[s % len(systems)]}] for s in range(sessions)}
    exact = total = 0
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for _ in range(turns):
            for session in rng.sample(range(sessions), sessions):
                messages = histories[session]
                words = " ".join(rng.choice(("disk", "queue", "cache", "page", "lock")) for _ in range(40))
                messages.append({"role": "user", "content": f"s{session}: {words}"})
                response = http.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": messages, "max_tokens": 20},
                    headers={"x-session-id": f"s{session}"},
                )
                assert response.status_code == 200, f"{response.status_code} {response.text}"
                body = response.json()
                predicted = int(response.headers["x-pcache-predicted-cached-tokens"])
                reported = body["usage"]["prompt_tokens_details"]["cached_tokens"]
                exact += predicted == reported
                total += 1
                messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
    return exact, total


def test_the_router_predicts_the_engines_cached_tokens_exactly_from_their_kv_events(
    fleet: SimFleet, tmp_path: Path
) -> None:
    with _router(fleet, tmp_path / "precise", precise=True) as router:
        eventually(lambda: set(_precise(router).values()) == {"precise"}, what="both replicas precise")
        exact, total = _chat_workload(router.url, sessions=12, turns=4, seed=1)
        status = _status(router)
    with _router(fleet, tmp_path / "approximate", precise=False) as router:
        approx_exact, approx_total = _chat_workload(router.url, sessions=12, turns=4, seed=2)
    print(f"\nexact predictions: precise {exact}/{total}, approximate {approx_exact}/{approx_total}")
    assert exact / total >= 0.95
    for row in status.replicas:
        assert row.kv_events is not None and row.kv_events["batches"] > 0, row.kv_events
        assert row.kv_events["mode"] == "connect"  # the engine bound a wildcard
        assert row.predictions > 0 and row.prediction_exact_ratio is not None
        assert row.cached_prefix_tokens and row.cached_prefix_tokens["GPU"] > 0
    assert status.all.predictions == total


def test_a_replica_whose_events_stop_is_back_on_the_approximate_index_within_a_health_interval(
    fleet: SimFleet, tmp_path: Path
) -> None:
    assert fleet.process is not None
    with _router(fleet, tmp_path / "router", precise=True) as router:
        eventually(lambda: set(_precise(router).values()) == {"precise"}, what="both replicas precise")
        os.kill(fleet.process.pid, signal.SIGSTOP)  # the engines stop answering anything
        try:
            stopped = eventually(
                lambda: set(_precise(router).values()) == {"approximate"} or None,
                timeout_s=10,  # liveness is read at status time: one interval after the last answer
                interval_s=0.05,
                what="both replicas back on the approximate index",
            )
            assert stopped
            assert any("KV events not live" in line for line in _status(router).callouts)
        finally:
            os.kill(fleet.process.pid, signal.SIGCONT)
        eventually(lambda: set(_precise(router).values()) == {"precise"}, what="precise again")


def test_an_engine_restart_is_detected_and_its_blocks_forgotten(fleet: SimFleet, tmp_path: Path) -> None:
    with _router(fleet, tmp_path / "router", precise=True) as router:
        eventually(lambda: set(_precise(router).values()) == {"precise"}, what="both replicas precise")
        prompt = "The quick brown fox jumps over the lazy dog near the river bank. " * 20
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 2}
        with httpx.Client(base_url=router.url, timeout=30) as http:
            first = http.post("/v1/completions", json=body, headers={"x-session-id": "fox"})
            assert first.status_code == 200, first.text
            replica = first.headers["x-pcache-replica"]

            def predicted() -> int:
                answer = http.post("/v1/completions", json=body, headers={"x-session-id": "fox"})
                assert answer.status_code == 200, answer.text
                reported = int(answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"])
                assert int(answer.headers["x-pcache-predicted-cached-tokens"]) == reported
                return reported

            assert eventually(predicted, what="the prompt cached and predicted") > 0
            restarted = httpx.post(f"{fleet.urls[replica]}/sim/faults", json={"restart": True}, timeout=10)
            assert restarted.status_code == 200, restarted.text
            # The first request after the restart is a miss on the engine, and the router says so once
            # the restarted engine's first events (sequence back at 0) arrive.
            other = http.post("/v1/completions", json={**body, "prompt": "unrelated " * 50})
            assert other.status_code == 200, other.text

            def restart_seen() -> bool:
                rows = {row.name: row for row in _status(router).replicas}
                events = rows[other.headers["x-pcache-replica"]].kv_events or {}
                return bool(events.get("restarts")) or other.headers["x-pcache-replica"] != replica

            eventually(restart_seen, what="the restart detected")


def test_route_explain_and_status_wide_say_which_index_each_replica_uses(
    fleet: SimFleet, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from pcache.api import ExplainRequest
    from pcache_cli.main import app

    with _router(fleet, tmp_path / "router", precise=True) as router:
        eventually(lambda: set(_precise(router).values()) == {"precise"}, what="both replicas precise")
        _chat_workload(router.url, sessions=2, turns=2, seed=3)
        body: dict[str, object] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "explain me " * 40}],
        }
        with router.admin() as admin:
            decision = admin.explain(ExplainRequest(body=body))
        assert decision.engine_tokens is not None and decision.engine_tokens > 0
        assert {c.cache_source for c in decision.candidates if c.excluded is None} == {"precise"}
        env = {
            "PCACHE_ROUTER": router.admin_url,
            "PCACHE_ADMIN_TOKEN": router.token or "",
            "NO_COLOR": "1",
            "COLUMNS": "400",
        }
        result = CliRunner().invoke(app, ["status", "-o", "wide"], env=env)
        assert result.exit_code == 0, result.output
        assert "r1" in result.output and "r2" in result.output  # (columns truncate on a narrow console)
        as_json = CliRunner().invoke(app, ["status", "-o", "json"], env=env)
        assert as_json.exit_code == 0, as_json.output
        replicas = json.loads(as_json.output)["replicas"]
        assert {r["cache_index"] for r in replicas} == {"precise"}
        assert all(
            r["prediction_exact_ratio"] == 1.0 and r["cached_prefix_tokens"]["GPU"] > 0 for r in replicas
        )
        explained = CliRunner().invoke(app, ["route", "explain", "--help"], env=env)
        assert explained.exit_code == 0


def _streamed_turns(base_url: str, sessions: int, turns: int) -> tuple[int, int]:
    """Streamed chat turns with the usage chunk; (exact predictions, requests)."""
    exact = total = 0
    histories = {s: [{"role": "system", "content": f"Streamed helper {s}. " * 30}] for s in range(sessions)}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for turn in range(turns):
            for session, messages in histories.items():
                messages.append({"role": "user", "content": f"turn {turn} of {session}: " + "words " * 40})
                body = {
                    "model": MODEL,
                    "messages": messages,
                    "max_tokens": 20,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                with http.stream(
                    "POST", "/v1/chat/completions", json=body, headers={"x-session-id": f"st{session}"}
                ) as response:
                    assert response.status_code == 200, f"{response.status_code} {response.read()!r}"
                    predicted = int(response.headers["x-pcache-predicted-cached-tokens"])
                    text, usage = "", None
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        for choice in chunk.get("choices", []):
                            text += choice.get("delta", {}).get("content") or ""
                assert usage is not None, "no usage chunk"
                exact += predicted == usage["prompt_tokens_details"]["cached_tokens"]
                total += 1
                messages.append({"role": "assistant", "content": text})
    return exact, total


def test_cache_aware_streams_predict_exactly_too_and_the_router_counts_the_usage_chunk(
    fleet: SimFleet, tmp_path: Path
) -> None:
    router = RouterProcess(
        fleet.urls,
        policy="cache_aware",
        state_dir=tmp_path / "router",
        replica_options=_engine_endpoints(fleet),
        health={"interval_s": HEALTH_INTERVAL_S},
    )
    with router:
        eventually(lambda: set(_precise(router).values()) == {"precise"}, what="both replicas precise")
        exact, total = _streamed_turns(router.url, sessions=4, turns=3)
        assert exact / total >= 0.95, f"{exact}/{total}"
        status = _status(router)
        assert status.all.predictions == total
