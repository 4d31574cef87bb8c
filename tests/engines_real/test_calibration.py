"""Calibration on real engines: the router's prompt-token estimate within 10% of the engine's.

The tiny model's byte-level BPE gives far fewer characters per token than the router's configured
4.0. After a couple of hundred ordinary chat requests through the router (their relayed
``usage.prompt_tokens`` is all it learns from) its estimate for prompts it has never seen, as
``route explain`` reports it, must be within 10% of what the engine then counts; the engines'
block size and KV capacity come from ``vllm:cache_config_info``.
"""

from __future__ import annotations

from pcache.api import ExplainRequest
from tests.engines_real.engine import BLOCK_SIZE, MODEL_NAME
from tests.engines_real.stack import EnginePair
from tests.engines_real.traffic import chat, prose
from tests.harness.router import RouterProcess

WARM_UP = 200


def _messages(seed: str, system_chars: int, user_chars: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": prose(f"calibration-system-{seed}", system_chars)},
        {"role": "user", "content": prose(f"calibration-user-{seed}", user_chars)},
    ]


def test_prompt_token_estimate_is_within_10_percent_of_the_engines_after_warm_up(
    router: RouterProcess, fleet: EnginePair
) -> None:
    # Ordinary traffic: distinct conversations of varied length (word salad from one vocabulary, so
    # its characters per token vary by a few percent from text to text, as real prose does).
    for n in range(WARM_UP):
        chat(router.url, _messages(str(n), 300 + 40 * (n % 8), 60 + 25 * (n % 11)), session=f"cal-{n}")
    with router.admin() as admin:
        for n in range(5):
            messages = _messages(f"unseen-{n}", 900 + 200 * n, 150)
            body = {"model": MODEL_NAME, "max_tokens": 1, "messages": messages}
            decision = admin.explain(ExplainRequest(body=body))
            engine = chat(fleet.urls[decision.replica or "e1"], messages, max_tokens=1)
            assert decision.chars_per_token_calibrated, decision
            error = abs(decision.prompt_tokens - engine.prompt_tokens) / engine.prompt_tokens
            assert error <= 0.10, (decision.prompt_tokens, engine.prompt_tokens, decision.chars_per_token)
            assert decision.engine_block_size == BLOCK_SIZE
        status = admin.status()
    for row in status.replicas:
        info = fleet[row.name].cache_config()
        assert row.block_size == int(info["block_size"]) == BLOCK_SIZE
        assert row.kv_capacity_tokens == BLOCK_SIZE * int(info["num_gpu_blocks"])
        assert row.chars_per_token is not None and row.chars_per_token < 4.0
