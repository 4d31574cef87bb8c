"""Concurrent admin writes (pin, unpin, drain, undrain from several clients at once) on a live router.

Whatever the interleaving, the router must end in a state that some serial order of the writes
explains, keep at least one routable replica unless a drain was forced, and hold in memory exactly
what it persisted (a SIGKILL and restart must show the same pins and drains).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pcache.api import PinIn, ReplicaStateName
from pcache.client import ApiError, Refused
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

PREFIXES = [
    {"name": f"bot-{i}", "text": f"You are assistant number {i} of the support fleet. " * 12, "copies": 1}
    for i in range(9)
]


def _text(tag: str) -> str:
    return f"You are the {tag} assistant; answer in one paragraph and cite sources. " * 6


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=3) as fleet:
        yield fleet


def _run_all(calls: list[Callable[[], Any]], workers: int = 8) -> list[Any]:
    """Run every call on a thread pool at once; return each result or the exception it raised."""

    def guarded(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiError as exc:
            return exc

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(guarded, calls))


def _state(
    router: RouterProcess,
) -> tuple[dict[str, ReplicaStateName], dict[str, tuple[str, list[str], int]]]:
    with router.admin() as admin:
        replicas = {r.name: r.state for r in admin.replicas()}
        pins = {p.name: (p.text_head, p.replicas, p.copies) for p in admin.pins()}
    return replicas, pins


def test_concurrent_drains_never_drain_the_last_routable_replica(sim: SimFleet, tmp_path: Path) -> None:
    """Three clients drain the three replicas at once (no force): one must be refused.

    Each replica owns Tier-1 prefixes, so every drain first prewarms successors: the check for
    "last routable" has to hold across that wait.
    """
    with RouterProcess(replicas=sim.urls, tier1=PREFIXES, state_dir=tmp_path) as router:
        with router.admin() as admin:
            owned = {r.name: r.tier1_owned for r in admin.replicas()}
        assert all(owned.values()), f"every replica owns a Tier-1 prefix: {owned}"
        clients = [router.admin() for _ in sim.urls]
        try:
            results = _run_all([partial(c.drain, n) for c, n in zip(clients, sim.urls, strict=True)])
        finally:
            for client in clients:
                client.close()
        refused = [r for r in results if isinstance(r, Refused)]
        assert len(refused) >= 1, "all three drains succeeded: nothing is left to serve requests"
        assert all(r.code == "last_routable" and r.status == 409 for r in refused)
        replicas, _ = _state(router)
        assert list(replicas.values()).count("healthy") >= 1, replicas


def test_a_storm_of_pins_unpins_drains_and_undrains_leaves_consistent_durable_state(
    sim: SimFleet, tmp_path: Path
) -> None:
    rng = random.Random(8)
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path) as router:
        clients = [router.admin() for _ in range(8)]
        # Each client runs its own sequence in order; the eight sequences run at once.
        sequences: list[list[Callable[[], Any]]] = []
        expected_own: dict[str, bool] = {}
        for index, client in enumerate(clients):
            sequence: list[Callable[[], Any]] = []
            # Own pins: one writer per name, so the final state is known.
            for j in range(4):
                name = f"own-{index}-{j}"
                sequence.append(partial(client.pin, name, PinIn(text=_text(name), copies=1)))
                expected_own[name] = True
            sequence.append(partial(client.unpin, f"own-{index}-0"))
            expected_own[f"own-{index}-0"] = False
            # Contested writes: everyone pins, unpins and re-pins the same names and drains r1/r2.
            for _ in range(3):
                contested = rng.choice(["shared-a", "shared-b"])
                tag = f"{contested}-by-{index}"
                sequence.append(partial(client.pin, contested, PinIn(text=_text(tag), copies=1)))
                sequence.append(partial(client.unpin, contested))
                if rng.random() < 0.5:
                    sequence.append(partial(client.pin, contested, PinIn(text=_text(tag))))
            replica = rng.choice(["r1", "r2"])
            sequence += [partial(client.drain, replica), partial(client.undrain, replica)]
            if rng.random() < 0.5:
                sequence.append(partial(client.drain, replica))
            sequences.append(sequence)
        try:
            outcomes = _run_all([partial(_run_in_order, seq) for seq in sequences])
        finally:
            for client in clients:
                client.close()
        errors = [o for seq in outcomes for o in seq if isinstance(o, ApiError)]
        assert all(e.status in (404, 409) for e in errors), [(e.status, e.message) for e in errors]
        replicas, pins = _state(router)
        for name, present in expected_own.items():
            assert (name in pins) is present, name
            if present:
                assert pins[name][0] == _text(name)[:80]
        for name in ("shared-a", "shared-b"):
            if name in pins:
                assert pins[name][0].startswith(f"You are the {name}-by-"), pins[name]
        assert replicas["r3"] == "healthy"
        router.kill()
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path) as restarted:
        after_replicas, after_pins = _state(restarted)
    assert after_pins == pins, "what the router served differs from what it persisted"
    assert after_replicas == replicas


def _safe(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ApiError as exc:
        return exc


def _run_in_order(calls: list[Callable[[], Any]]) -> list[Any]:
    """One client's sequence: each call's result or the API error it raised, in order."""
    return [_safe(call) for call in calls]


def test_draining_and_removing_one_replica_at_once_never_fails_with_5xx(
    sim: SimFleet, tmp_path: Path
) -> None:
    """Regression: a drain still warming successors when a remove of the same replica landed
    reached ``fleet.set_drain`` on a replica that no longer existed."""
    with RouterProcess(replicas=sim.urls, tier1=PREFIXES, state_dir=tmp_path) as router:
        clients = [router.admin() for _ in range(4)]
        try:
            results = _run_all(
                [
                    lambda: clients[0].drain("r3"),
                    lambda: clients[1].remove_replica("r3"),
                    lambda: clients[2].drain("r3"),
                    lambda: clients[3].remove_replica("r3"),
                ]
            )
        finally:
            for client in clients:
                client.close()
        failures = [r for r in results if isinstance(r, ApiError)]
        assert all(f.status in (404, 409) for f in failures), [(f.status, f.message) for f in failures]
        replicas, _ = _state(router)
        assert "r3" not in replicas
        assert replicas == {"r1": "healthy", "r2": "healthy"}
