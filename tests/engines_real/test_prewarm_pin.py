"""Prewarm and pin against real engines: the warmed replica is where the traffic goes, and it hits."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engines_real.engine import BLOCK_SIZE
from tests.engines_real.stack import Cli, EnginePair
from tests.engines_real.traffic import chat, prose
from tests.harness.router import RouterProcess

PREFIXES = {f"agent-{i}": prose(f"prewarm-agent-{i}", 1800) for i in range(3)}


def _ask(router: RouterProcess, system: str, session: str) -> tuple[str, int]:
    answer = chat(
        router.url,
        [{"role": "system", "content": system}, {"role": "user", "content": f"question from {session}"}],
        session=session,
    )
    return answer.replica, answer.cached_tokens


def test_prewarm_verify_then_each_prefixs_first_request_from_a_new_session_hits(
    router: RouterProcess, fleet: EnginePair, pcache_cli: Cli, tmp_path: Path
) -> None:
    prefixes = tmp_path / "prefixes.jsonl"
    prefixes.write_text("".join(json.dumps({"name": n, "text": t}) + "\n" for n, t in PREFIXES.items()))
    warmed = pcache_cli("prewarm", str(prefixes), "--verify", "-o", "json")
    assert warmed.returncode == 0, f"{warmed.returncode}\n{warmed.stdout}\n{warmed.stderr}"
    job = json.loads(warmed.stdout)
    pairs = job["results"]
    assert len(pairs) == len(PREFIXES) and all(p["ok"] and p["verified"] for p in pairs), pairs
    homes = {p["prefix"]: p["replica"] for p in pairs}

    before = fleet.counters("vllm:prefix_cache_hits_total")
    for n, (name, text) in enumerate(PREFIXES.items()):
        replica, cached = _ask(router, text, f"new-session-{n}")
        assert replica == homes[name], f"{name} warmed on {homes[name]}, routed to {replica}"
        assert cached >= BLOCK_SIZE, f"{name}: the engine reported {cached} cached tokens"
    after = fleet.counters("vllm:prefix_cache_hits_total")
    assert sum(after.values()) - sum(before.values()) > 0


def test_pin_with_prewarm_routes_new_sessions_to_the_pinned_engine_where_they_hit_then_unpin(
    router: RouterProcess, fleet: EnginePair, pcache_cli: Cli, tmp_path: Path
) -> None:
    text = prose("pinned-tools", 2000)
    prompt = tmp_path / "tools.txt"
    prompt.write_text(text)
    pinned = pcache_cli("pin", "tools", "--file", str(prompt), "--replicas", "e2", "--prewarm", "-o", "json")
    assert pinned.returncode == 0, f"{pinned.returncode}\n{pinned.stdout}\n{pinned.stderr}"
    assert json.loads(pinned.stdout)["replicas"] == ["e2"]
    assert "1/1 pairs ok" in pinned.stderr

    e2_before = fleet.e2.counter("vllm:prefix_cache_hits_total")
    for n in range(3):
        replica, cached = _ask(router, text, f"pinned-session-{n}")
        assert replica == "e2" and cached >= BLOCK_SIZE, (replica, cached)
    assert fleet.e2.counter("vllm:prefix_cache_hits_total") - e2_before >= 3 * BLOCK_SIZE

    unpinned = pcache_cli("unpin", "tools")
    assert unpinned.returncode == 0 and unpinned.stdout.strip() == "unpinned tools", unpinned.stderr
    pins = json.loads(pcache_cli("pins", "-o", "json").stdout)
    assert "tools" not in [pin["name"] for pin in pins]
