"""An engine SIGKILLed (its whole process group) under streaming load: clients see no HTTP error,
only the streams in flight on it end with an error event; it is marked down, and back after restart."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter

import httpx

from tests.engines_real.engine import MODEL_NAME
from tests.engines_real.stack import Cli, EnginePair
from tests.engines_real.traffic import prose
from tests.harness.router import RouterProcess
from tests.harness.wait import eventually

CLIENTS = 4


def _stream(url: str, session: str) -> tuple[str, str]:
    """One streamed chat: ``("ok", replica)``, ``("error_event", replica)`` or ``("http NNN", body)``."""
    payload = {
        "model": MODEL_NAME,
        "messages": [{"role": "system", "content": prose(session, 900)}, {"role": "user", "content": "go"}],
        "max_tokens": 48,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=payload, headers={"x-session-id": session}, timeout=120
    ) as response:
        replica = response.headers.get("x-pcache-replica", "")
        if response.status_code != 200:
            return f"http {response.status_code}", response.read().decode(errors="replace")
        done = False
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and "error" in json.loads(line.removeprefix("data: ")):
                return "error_event", replica
    return ("ok" if done else "truncated"), replica


def _states(cli: Cli) -> dict[str, str]:
    done = cli("status", "-o", "json")
    assert done.returncode == 0, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    return {row["name"]: row["state"] for row in json.loads(done.stdout)["replicas"]}


def test_sigkill_under_streaming_load_loses_only_in_flight_streams_then_the_engine_returns(
    router: RouterProcess, fleet: EnginePair, pcache_cli: Cli
) -> None:
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        turn = 0
        while not stop.is_set():
            outcome = _stream(router.url, f"failover-{n}-{turn % 3}")
            with lock:
                outcomes.append(outcome)
            turn += 1

    def served(replica: str) -> int:
        with lock:
            return sum(1 for kind, where in outcomes if kind == "ok" and where == replica)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        eventually(
            lambda: served("e1") and served("e2"), timeout_s=120, what="streams served by both engines"
        )
        fleet.e1.kill()
        eventually(lambda: _states(pcache_cli)["e1"] != "healthy", timeout_s=30, what="e1 marked down")
        with lock:
            at_down = len(outcomes)
        eventually(
            lambda: sum(1 for kind, _ in outcomes[at_down:] if kind == "ok") >= 2 * CLIENTS,
            timeout_s=120,
            what="streams served by e2 after e1 went down",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(180)

    kinds = Counter(kind for kind, _ in outcomes)
    assert set(kinds) <= {"ok", "error_event"}, (
        f"clients saw {kinds}: {[o for o in outcomes if o[0] != 'ok']}"
    )
    assert kinds["error_event"] <= CLIENTS, f"more broken streams than were in flight: {kinds}"
    assert all(where == "e1" for kind, where in outcomes if kind == "error_event")

    fleet.e1.start().wait_ready()
    eventually(lambda: _states(pcache_cli)["e1"] == "healthy", timeout_s=60, what="e1 back after restart")
    sessions = itertools.count()
    eventually(
        lambda: _stream(router.url, f"after-restart-{next(sessions)}") == ("ok", "e1"),
        timeout_s=60,
        interval_s=0,
        what="a new session served by the restarted e1",
    )
