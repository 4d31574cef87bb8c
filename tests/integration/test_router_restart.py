"""The router SIGKILLed with requests in flight, then restarted on the same state.

In-flight clients must get a clean connection error (never a truncated success), and the restarted
router must come back with every operator decision: run-time pins (pinned and k-copies), the config's
Tier-1 registry, drains (a drain still waiting on in-flight work resumes as drained), removals and
run-time replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from pcache.api import ExplainRequest, PinIn, ReplicaIn
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually

MODEL = "sim-model"
BILLING = "You are the billing assistant of Globex. Explain invoices step by step. " * 12
LEGAL = "You are the legal assistant of Globex. Never give legal advice, only cite policy. " * 12
SUPPORT = "You are the support assistant of Globex. Be brief and friendly to every customer. " * 12
CONFIG_TIER1 = [{"name": "support", "text": SUPPORT, "copies": 2}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=4) as fleet:
        yield fleet


def _body(session: str, system: str | None = None, max_tokens: int = 4) -> dict[str, object]:
    messages = [{"role": "user", "content": f"question from {session}"}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": MODEL, "messages": messages, "max_tokens": max_tokens}


def test_sigkill_with_requests_in_flight_then_restart_keeps_every_operator_decision(
    sim: SimFleet, tmp_path: Path
) -> None:
    config_replicas = {n: sim.urls[n] for n in ("r1", "r2", "r3")}
    router = RouterProcess(replicas=config_replicas, tier1=CONFIG_TIER1, state_dir=tmp_path).start()
    outcomes: dict[str, object] = {}
    try:
        with router.admin() as admin:
            admin.pin("billing", PinIn(text=BILLING, replicas=["r1"]))
            admin.pin("legal", PinIn(text=LEGAL, copies=2))
            admin.add_replica(ReplicaIn(name="r4", url=sim.urls["r4"]))
            admin.drain("r2")
            admin.remove_replica("r3")
            stuck_session = next(
                s
                for s in (f"stuck-{i}" for i in range(400))
                if admin.explain(ExplainRequest(body=_body(s), session=s)).replica == "r4"
            )
            before = {r.name: r.state for r in admin.replicas()}
            pins_before = {p.name: (p.source, p.replicas, p.copies) for p in admin.pins()}
        assert before == {"r1": "healthy", "r2": "drained", "r4": "healthy"}

        # In flight at the kill: a request stuck on a stalled r4 (which is then drained, so it stays
        # "draining"), and a slow stream on r1 that has already delivered its first chunk.
        sim.set_faults("r4", stall=True)

        def stuck() -> None:
            try:
                response = httpx.post(
                    f"{router.url}/v1/chat/completions",
                    json=_body(stuck_session),
                    headers={"x-session-id": stuck_session},
                    timeout=20,
                )
                outcomes["stuck"] = response.status_code
            except httpx.HTTPError as exc:
                outcomes["stuck"] = exc

        thread = threading.Thread(target=stuck)
        thread.start()
        with router.admin() as admin:
            eventually(lambda: next(r for r in admin.replicas() if r.name == "r4").in_flight == 1)
            assert admin.drain("r4").state == "draining"
        sim.set_faults("r1", slow_factor=30.0)
        client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=20)
        stream = client.chat.completions.create(  # type: ignore[call-overload]
            **_body("streaming", BILLING, max_tokens=200),
            stream=True,
            extra_headers={"x-session-id": "streaming"},
        )
        received = [next(iter(stream))]
        router.kill()
        with pytest.raises((httpx.HTTPError, openai.APIError)):
            for chunk in stream:
                received.append(chunk)
        assert all(c.choices[0].finish_reason is None for c in received if c.choices), "no complete stream"
        thread.join(20)
        assert isinstance(outcomes["stuck"], httpx.RemoteProtocolError | httpx.ReadError), outcomes
    finally:
        router.stop()
        sim.set_faults("r4", stall=False)
        sim.set_faults("r1", slow_factor=1.0)

    with RouterProcess(replicas=config_replicas, tier1=CONFIG_TIER1, state_dir=tmp_path) as restarted:
        with restarted.admin() as admin:
            after = {r.name: r.state for r in admin.replicas()}
            pins_after = {p.name: (p.source, p.replicas, p.copies) for p in admin.pins()}
        assert after == {"r1": "healthy", "r2": "drained", "r4": "drained"}, "r3 stays removed"
        assert pins_after == pins_before
        assert pins_after == {
            "billing": ("pin", ["r1"], 1),
            "legal": ("pin", [], 2),
            "support": ("config", [], 2),
        }
        raw = openai.OpenAI(  # type: ignore[call-overload]
            base_url=f"{restarted.url}/v1", api_key="unused", max_retries=0, timeout=10
        ).chat.completions.with_raw_response.create(**_body("after", BILLING))
        assert (raw.headers["x-pcache-replica"], raw.headers["x-pcache-reason"]) == ("r1", "pinned")
