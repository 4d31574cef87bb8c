"""Drain against real engines: the handover prewarm lands on the successor, a failed one is loud."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engines_real.engine import BLOCK_SIZE
from tests.engines_real.stack import EnginePair, cli_runner, make_router
from tests.engines_real.traffic import chat, prose
from tests.harness.router import RouterProcess

SUPPORT = prose("drain-support", 2200)


def _turn(router: RouterProcess, session: str, question: str) -> tuple[str, int]:
    answer = chat(
        router.url,
        [{"role": "system", "content": SUPPORT}, {"role": "user", "content": question}],
        session=session,
    )
    return answer.replica, answer.cached_tokens


def _router(fleet: EnginePair, tmp_path: Path, **config: object) -> RouterProcess:
    return make_router(
        fleet, tmp_path / "router", tier1=[{"name": "support", "text": SUPPORT, "copies": 1}], **config
    )


def test_drain_prewarms_the_successor_and_the_sessions_next_request_hits_there(
    fleet: EnginePair, tmp_path: Path
) -> None:
    with _router(fleet, tmp_path) as router:
        home, _ = _turn(router, "drained-session", "first turn")
        successor = "e2" if home == "e1" else "e1"
        drained = cli_runner(router, tmp_path / "xdg")("drain", home, "-y", "-o", "json")
        assert drained.returncode == 0, f"{drained.returncode}\n{drained.stdout}\n{drained.stderr}"
        radius = json.loads(drained.stdout)
        assert radius["tier1"] == [{"prefix": "support", "successors": [successor]}]
        assert radius["prewarm_job"]

        before = fleet[successor].counter("vllm:prefix_cache_hits_total")
        replica, cached = _turn(router, "drained-session", "second turn, after the drain")
        assert replica == successor
        assert cached >= BLOCK_SIZE, f"the successor reported {cached} cached tokens"
        assert fleet[successor].counter("vllm:prefix_cache_hits_total") - before == cached


def test_a_failed_handover_prewarm_fails_the_drain_command_and_names_the_pair(
    fleet: EnginePair, tmp_path: Path
) -> None:
    # The engines serve one model; prewarms asking for another get vLLM's 404 on the successor.
    with _router(fleet, tmp_path, prewarm={"model": "no-such-model"}) as router:
        home, _ = _turn(router, "failing-handover", "first turn")
        successor = "e2" if home == "e1" else "e1"
        drained = cli_runner(router, tmp_path / "xdg")("drain", home, "-y")
        output = drained.stdout + drained.stderr
        assert drained.returncode == 5, (
            f"drain exited {drained.returncode} after a failed handover:\n{output}"
        )
        # The failed pair, with the engine's own refusal.
        assert f"support on {successor}" in output and "HTTP 404" in output, output
