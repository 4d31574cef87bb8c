"""Operator actions on a live router in front of a simulated fleet: drain, pins, prewarm, restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcache.api import PinIn, PrewarmIn, PrewarmPrefix, ReplicaIn
from pcache.client import NotFound, Refused, Unauthorized
from pcache.testing.http import expect_status
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually

MODEL = "sim-model"
SYSTEM = "You are the billing assistant of Globex. Explain invoices step by step. " * 30


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=4) as fleet:
        yield fleet


@pytest.fixture()
def router(sim: SimFleet, tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path) as process:
        yield process


def _ask(
    router: RouterProcess, session: str, system: str = SYSTEM, user: str = "hello"
) -> tuple[str, str, int]:
    """One chat turn: (replica, reason, engine-reported cached tokens)."""
    raw = router.openai().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        max_tokens=2,
        extra_headers={"x-session-id": session},
    )
    usage = raw.parse().usage
    details = usage.prompt_tokens_details if usage is not None else None
    cached = (details.cached_tokens or 0) if details is not None else 0
    return raw.headers["x-pcache-replica"], raw.headers["x-pcache-reason"], cached


def test_drain_moves_sessions_and_ends_drained(router: RouterProcess) -> None:
    home, _, _ = _ask(router, "s-drain")
    with router.admin() as admin:
        preview = admin.drain(home, dry_run=True)
        assert preview.dry_run and preview.sessions >= 1
        assert admin.replicas()[0].state == "healthy"
        radius = admin.drain(home)
        assert radius.replica == home
        eventually(lambda: next(r for r in admin.replicas() if r.name == home).state == "drained")
    moved, _, _ = _ask(router, "s-drain")
    assert moved != home
    again, reason, _ = _ask(router, "s-drain", user="second turn")
    assert again == moved and reason == "session_home"
    with router.admin() as admin:
        assert admin.drift(60).moves_by_cause.get("drain", 0) >= 1
        admin.undrain(home)
        assert next(r for r in admin.replicas() if r.name == home).state == "healthy"


def test_draining_the_last_routable_replica_is_refused_unless_forced(sim: SimFleet, tmp_path: Path) -> None:
    with RouterProcess(replicas={"r1": sim.urls["r1"], "r2": sim.urls["r2"]}, state_dir=tmp_path) as router:
        with router.admin() as admin:
            admin.drain("r1")
            with pytest.raises(Refused) as refused:
                admin.drain("r2")
            assert refused.value.status == 409
            admin.drain("r2", force=True)
        response = httpx.post(
            f"{router.url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "anyone?"}]},
            timeout=5,
        )
        expect_status(response, 503)
        assert response.json()["error"]["code"] == "no_replica"


def test_pin_is_honoured_and_unpin_releases_it(router: RouterProcess) -> None:
    with router.admin() as admin:
        pin = admin.pin("billing", PinIn(text=SYSTEM, replicas=["r3"]))
        assert pin.owners == ["r3"] and pin.source == "pin"
        assert [p.name for p in admin.pins()] == ["billing"]
    for session in ("a", "b", "c", "d", "e"):
        replica, reason, _ = _ask(router, f"pin-{session}")
        assert (replica, reason) == ("r3", "pinned")
    with router.admin() as admin:
        admin.unpin("billing")
        assert admin.pins() == []
        with pytest.raises(NotFound):
            admin.unpin("billing")


def test_prewarm_makes_the_next_request_hit_the_cache(router: RouterProcess) -> None:
    system = "You are a tax advisor for freelancers in the Netherlands. Cite the rules you apply. " * 25
    with router.admin() as admin:
        job = admin.prewarm(
            PrewarmIn(prefixes=[PrewarmPrefix(name="tax", text=system, copies=1)], pin=True, verify=True)
        )
        eventually(lambda: admin.prewarm_job(job.id).state == "done")
        done = admin.prewarm_job(job.id)
        assert done.failed == 0 and done.total == 1
        assert done.results[0].verified is True
        owner = done.results[0].replica
    replica, reason, cached = _ask(router, "prewarmed-session", system=system)
    assert replica == owner
    assert reason in ("prefix_owner", "session_home", "overflow") or reason
    assert cached > 0


def test_writes_need_the_token(router: RouterProcess) -> None:
    with router.admin(token=False) as anonymous:
        assert len(anonymous.replicas()) == 4  # reads are open by default
        with pytest.raises(Unauthorized):
            anonymous.drain("r1")
    with router.admin(token="wrong") as wrong, pytest.raises(Unauthorized):
        wrong.pin("x", PinIn(text=SYSTEM, copies=1))


def test_unknown_names_are_404_with_openai_errors(router: RouterProcess) -> None:
    with router.admin() as admin:
        with pytest.raises(NotFound):
            admin.drain("nope")
        with pytest.raises(NotFound):
            admin.prewarm_job("pw-0")
    response = httpx.post(
        f"{router.admin_url}/api/v1/replicas/nope/undrain",
        timeout=5,
        headers={"authorization": f"Bearer {router.token}"},
    )
    expect_status(response, 404)
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_restart_keeps_pins_drains_and_runtime_replicas(sim: SimFleet, tmp_path: Path) -> None:
    three = {name: sim.urls[name] for name in ("r1", "r2", "r3")}
    with RouterProcess(replicas=three, state_dir=tmp_path) as router, router.admin() as admin:
        admin.pin("billing", PinIn(text=SYSTEM, replicas=["r1"]))
        admin.drain("r2")
        admin.add_replica(ReplicaIn(name="r4", url=sim.urls["r4"]))
        router.kill()  # no graceful shutdown: the state must already be on disk
    with RouterProcess(replicas=three, state_dir=tmp_path) as router, router.admin() as admin:
        states = {r.name: r.state for r in admin.replicas()}
        assert states == {"r1": "healthy", "r2": "drained", "r3": "healthy", "r4": "healthy"}
        pins = admin.pins()
        assert [(p.name, p.replicas) for p in pins] == [("billing", ["r1"])]
        replica, reason, _ = _ask(router, "after-restart")
        assert (replica, reason) == ("r1", "pinned")


def test_a_joining_replica_is_shown_as_joining_and_gets_no_traffic_until_prewarmed(sim: SimFleet) -> None:
    """`replicas add` health-checks the newcomer and prewarms the Tier-1 prefixes it will own before
    routing to it; meanwhile it is `joining` (not `unhealthy`: nothing failed) and excluded as such."""
    three = {name: sim.urls[name] for name in ("r1", "r2", "r3")}
    tier1 = [{"name": "billing", "text": SYSTEM, "copies": 4}]  # every replica owns it, r4 too
    sim.set_faults("r4", stall=True)  # completions (the prewarm) wait; /health still answers
    try:
        with (
            RouterProcess(replicas=three, tier1=tier1, prewarm={"handoff_wait_s": 30}) as router,
            router.admin() as admin,
        ):
            errors: list[BaseException] = []

            def add() -> None:
                try:
                    with router.admin() as other:
                        other.add_replica(ReplicaIn(name="r4", url=sim.urls["r4"]))
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            adding = threading.Thread(target=add)
            adding.start()
            try:
                eventually(lambda: {r.name: r.state for r in admin.replicas()}.get("r4") == "joining")
                status = {r.name: r for r in admin.status().replicas}
                assert status["r4"].state == "joining"
                assert status["r4"].last_error is None
                for n in range(6):  # new sessions spread over the fleet, never to the newcomer
                    assert _ask(router, f"join-{n}")[0] != "r4"
            finally:
                sim.set_faults("r4", stall=False)  # the prewarm completes, the add returns
                adding.join(timeout=30)
            assert not adding.is_alive() and not errors, errors
            assert {r.name: r.state for r in admin.replicas()}["r4"] == "healthy"
    finally:
        sim.set_faults("r4", stall=False)
