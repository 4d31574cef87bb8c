"""Nothing heavy on the data plane's event loop, nothing unbounded in its memory (issue 18 items 2-4).

Attacks from the review: a 15.8 MB request of 200k image parts stalled ``/health`` for 11.9 s; 30
requests with 5 MB ``user`` values kept 183 MB. Bodies this large are now parsed in the fingerprint
worker, content parts are rendered without a JSON encoding each, and session keys are bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from pcache.prompt import MAX_SESSION_KEY_CHARS, fingerprint_request
from pcache.testing.replica import RecordingReplica
from tests.harness.router import RouterProcess

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _tiny_parts_body(size: int) -> bytes:
    """A chat request just under ``size`` bytes made of one-character text parts."""
    part = orjson.dumps({"type": "text", "text": "a"}) + b","
    count = (size - 200) // len(part)
    parts = b"[" + part * count
    return b'{"model":"sim-model","messages":[{"role":"user","content":' + parts[:-1] + b"]}]}"


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _gauge(router: RouterProcess, name: str) -> float:
    for line in httpx.get(f"{router.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exposed")


@pytest.fixture(scope="module")
def replica() -> Iterator[RecordingReplica]:
    with RecordingReplica() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def router(replica: RecordingReplica, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    state = tmp_path_factory.mktemp("loop-router")
    with RouterProcess(replicas={"r1": replica.url}, state_dir=state, upstream={"retries": 0}) as process:
        yield process


def test_a_16_mib_body_of_tiny_parts_does_not_stall_the_event_loop(router: RouterProcess) -> None:
    """The loop's own CPU time between two ticks stays under 100 ms, and /health keeps answering.

    Wall-clock latency on a shared 2-core machine measures the machine as much as the router, so
    the 250 ms /health bar is measured by ``bench/attack.py``; here /health must merely answer
    while the request is in progress, and the stall gauge (CPU time, not wall time) must stay low.
    """
    body = _tiny_parts_body(16 * MIB)
    assert 15 * MIB < len(body) <= 16 * MIB
    _gauge(router, "pcache_event_loop_lag_seconds")  # exposed before the attack
    outcome: dict[str, httpx.Response] = {}

    def attack() -> None:
        outcome["response"] = httpx.post(
            f"{router.url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
            timeout=120,
        )

    thread = threading.Thread(target=attack)
    latencies = []
    with httpx.Client(timeout=10) as client:
        thread.start()
        while thread.is_alive():
            started = time.perf_counter()
            client.get(f"{router.url}/health").raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    thread.join()
    response = outcome["response"]
    assert response.status_code == 200, f"{response.status_code} {response.text[:500]}"
    assert len(latencies) >= 3, "the attack ended before /health could be measured"
    stall = _gauge(router, "pcache_event_loop_stall_seconds")
    assert stall < 0.1, f"the event loop's thread ran {stall:.3f} s of CPU without yielding"


def test_large_session_keys_do_not_stay_in_memory(router: RouterProcess) -> None:
    assert router.process is not None
    filler = "u" * MIB

    def send(i: int) -> None:
        body = {
            "model": "sim-model",
            "user": f"{i:04d}{filler}",
            "messages": [{"role": "user", "content": "hi"}],
        }
        response = httpx.post(f"{router.url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, f"{response.status_code} {response.text[:500]}"

    for i in range(5):  # the allocator's steady state
        send(i)
    before = _rss_bytes(router.process.pid)
    for i in range(5, 55):
        send(i)
    grown = _rss_bytes(router.process.pid) - before
    assert grown < 20 * MIB, f"50 requests with 1 MB user values grew the router by {grown / MIB:.1f} MiB"


def test_a_session_key_is_kept_at_a_fixed_size() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    long = fingerprint_request({**chat, "user": "x" * 100_000})
    other = fingerprint_request({**chat, "user": "x" * 99_999 + "y"})
    short = fingerprint_request({**chat, "user": "alice"})
    header = fingerprint_request(chat, {"x-session-id": "s" * 60_000})
    assert long.session is not None and len(long.session) <= MAX_SESSION_KEY_CHARS
    assert header.session is not None and len(header.session) <= MAX_SESSION_KEY_CHARS
    assert long.session != other.session and short.session == "alice"
