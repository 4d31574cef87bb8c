"""Multi-turn sessions stay home on real engines, and the engine's cached tokens grow every turn."""

from __future__ import annotations

import itertools

from tests.engines_real.engine import BLOCK_SIZE
from tests.engines_real.stack import EnginePair
from tests.engines_real.traffic import chat, prose
from tests.harness.router import RouterProcess


def test_each_turn_returns_home_and_caches_more_of_the_history(
    router: RouterProcess, fleet: EnginePair
) -> None:
    sessions = {
        f"affinity-{n}": [{"role": "system", "content": prose(f"affinity-system-{n}", 600)}] for n in range(4)
    }
    homes: dict[str, set[str]] = {name: set() for name in sessions}
    cached: dict[str, list[int]] = {name: [] for name in sessions}
    for turn in range(5):
        for name, messages in sessions.items():
            messages.append({"role": "user", "content": prose(f"{name}-turn-{turn}", 420)})
            answer = chat(router.url, messages, session=name, max_tokens=8)
            messages.append({"role": "assistant", "content": answer.text})
            homes[name].add(answer.replica)
            cached[name].append(answer.cached_tokens)
            assert answer.cached_tokens % BLOCK_SIZE == 0
    for name in sessions:
        assert len(homes[name]) == 1, f"{name} moved: {homes[name]}"
        growth = cached[name]
        assert growth[0] == 0 and all(b > a for a, b in itertools.pairwise(growth)), (name, growth)
