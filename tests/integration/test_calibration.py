"""Calibration against the engine: characters per token learned from relayed usage, engine blocks.

The simulated replicas tokenize at 2.7 characters per token with 128-token blocks (a real byte-level
BPE and vLLM's CPU default), not the router's configured 4.0 and 64-token guess. After a few hundred
ordinary requests the router's prompt-token estimates must be within 10% of the engine's counts,
with nothing extra sent to the engines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from pcache.api import DecisionOut, ExplainRequest, PinIn
from pcache.engines import parse_metrics
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration

TOPICS = ("invoices", "refunds", "shipping", "passwords", "warranty", "upgrades", "outages", "billing")


def _messages(i: int) -> list[dict[str, str]]:
    topic = TOPICS[i % len(TOPICS)]
    system = f"You are the {topic} assistant of Initech. Be precise and brief. " * (3 + i % 5)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Question {i} about {topic}: " + "why is that so? " * (1 + i % 7)},
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFleet, RouterProcess]]:
    with (
        SimFleet(replicas=2, chars_per_token=2.7, block_size=128, num_gpu_blocks=512) as sim,
        RouterProcess(replicas=sim.urls, state_dir=tmp_path_factory.mktemp("calibration")) as router,
    ):
        yield sim, router


def _served_prompt_tokens(sim: SimFleet) -> float:
    return sum(parse_metrics(sim.metrics(name)).prompt_tokens or 0.0 for name in sim.urls)


def test_prompt_token_estimate_is_within_10_percent_of_the_engines_after_warm_up(
    stack: tuple[SimFleet, RouterProcess],
) -> None:
    sim, router = stack
    with httpx.Client(base_url=router.url, timeout=30) as http:
        for i in range(240):
            body = {"model": "sim-model", "max_tokens": 1, "messages": _messages(i)}
            response = http.post("/v1/chat/completions", json=body, headers={"x-session-id": f"c{i}"})
            assert response.status_code == 200, response.text
    with router.admin() as admin:
        for i in range(1000, 1010):  # prompts the router has not seen
            body = {"model": "sim-model", "max_tokens": 1, "messages": _messages(i)}
            decision: DecisionOut = admin.explain(ExplainRequest(body=body))
            before = _served_prompt_tokens(sim)
            engine = httpx.post(f"{sim.urls[decision.replica or 'r1']}/v1/chat/completions", json=body)
            engine_tokens = engine.json()["usage"]["prompt_tokens"]
            assert _served_prompt_tokens(sim) - before == engine_tokens
            assert abs(decision.prompt_tokens - engine_tokens) <= 0.10 * engine_tokens, (
                decision,
                engine_tokens,
            )
            assert decision.chars_per_token_calibrated and decision.engine_block_size == 128
            assert decision.chars_per_token is not None and 2.0 < decision.chars_per_token < 3.4
        status = admin.status()
    for row in status.replicas:
        assert row.block_size == 128 and row.kv_capacity_tokens == 128 * 512
        assert row.chars_per_token is not None and row.calibration_samples > 0
    assert status.router.chars_per_token_calibrated


def test_status_wide_and_route_explain_show_the_calibration(stack: tuple[SimFleet, RouterProcess]) -> None:
    from typer.testing import CliRunner

    from pcache_cli.main import app

    _, router = stack
    env = {"PCACHE_ROUTER": router.admin_url, "PCACHE_ADMIN_TOKEN": router.token or "", "NO_COLOR": "1"}
    env |= {"PCACHE_CONFIG": "", "PCACHE_OUTPUT": "", "COLUMNS": "250"}
    wide = CliRunner().invoke(app, ["status", "-o", "wide"], env=env)
    assert wide.exit_code == 0, wide.stderr
    assert "CHARS/TOK" in wide.stdout and "BLOCK" in wide.stdout and "KV TOKENS" in wide.stdout, wide.stdout
    explained = CliRunner().invoke(app, ["route", "explain", "--prompt", "hello " * 80], env=env)
    assert explained.exit_code == 0, explained.stderr
    assert "chars/token" in explained.stdout and "engine block 128" in explained.stdout


def test_pins_show_tokens_calibrated_on_the_engine(stack: tuple[SimFleet, RouterProcess]) -> None:
    sim, router = stack
    text = "You are the pinned assistant of Initech. Quote the policy, then answer. " * 16
    with router.admin() as admin:
        pin = admin.pin("calibrated", PinIn(text=text, copies=1))
        try:
            engine = httpx.post(
                f"{sim.urls['r1']}/v1/chat/completions",
                json={
                    "model": "sim-model",
                    "max_tokens": 1,
                    "messages": [{"role": "system", "content": text}],
                },
            ).json()["usage"]["prompt_tokens"]
            assert abs(pin.tokens - engine) <= 0.10 * engine, (pin.tokens, engine)
            listed = {p.name: p.tokens for p in admin.pins()}
            assert listed["calibrated"] == pin.tokens
        finally:
            admin.unpin("calibrated")
    assert json.dumps(pin.tokens)
