"""Many routers on one Redis: what the shared state costs and what it keeps, measured on loopback.

    .venv/bin/python bench/shared_state.py                     # all three parts
    .venv/bin/python bench/shared_state.py --only latency --requests 1000

``latency``: the added p50 of the shared state on the request path. The same sequential requests
(each a new session, so each publishes a session home) go through one router on ``memory://``,
one router on Redis, and the first of two routers on Redis (heartbeats, peer load and home notices
flowing). Also the in-process cost of the only shared-state work a decision does (queueing its new
home for the write-behind publisher). Target: under 0.2 ms added p50.

``hitrate``: the same seeded multi-session workload against one router, then against three routers
on Redis behind a real HAProxy (round-robin, so a session's turns cross routers); fresh simulated
replicas for each run. The fleet hit rate (cached / prompt tokens, as the replicas reported them)
of three routers should be at least 0.97x one router's.

``outage``: three routers behind HAProxy under load; Redis is stopped for ``--outage-s`` seconds.
Counts failed requests (none expected), the status of an operator write during the outage (503
expected) and how long a pin made after Redis returned takes to reach every router.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcache.api import PinIn  # noqa: E402
from pcache.client import ApiError  # noqa: E402
from pcache.loadgen import LoadGenerator, LoadLimits, LoadSummary  # noqa: E402
from pcache.policy.tiered import TieredPolicy  # noqa: E402
from pcache.router.home_share import HomeShare  # noqa: E402
from pcache.state import MemoryStateStore  # noqa: E402
from pcache.workload import Workload, default_prompts  # noqa: E402
from tests.harness.haproxy import HAProxy  # noqa: E402
from tests.harness.redis import RedisServer  # noqa: E402
from tests.harness.router import RouterProcess  # noqa: E402
from tests.harness.sim import SimFleet  # noqa: E402

MODEL = "sim-model"
SYSTEM = "You are the billing assistant of Globex. Explain invoices step by step. " * 12


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def _routers(sim: SimFleet, base: Path, count: int, state: str | None) -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        for index in range(count):
            router = RouterProcess(
                replicas=sim.urls,
                state_dir=base / f"r{index}",
                startup_timeout_s=90.0,  # a busy machine starts three routers slowly
                state=state or "memory://",
            )
            started.append(router.start())
        yield started
    finally:
        for router in started:
            router.stop()


def _interleaved_latency(urls: list[str], requests: int) -> list[list[float]]:
    """Wall time of ``requests`` sequential chat requests per URL, each a new session; the URLs take
    turns request by request, so a busy machine's noise falls on every setup alike."""
    timings: list[list[float]] = [[] for _ in urls]
    clients = [httpx.Client(timeout=30) for _ in urls]
    try:
        for index in range(requests + 50):
            for slot, (url, client) in enumerate(zip(urls, clients, strict=True)):
                body = {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"q {index}"},
                    ],
                    "max_tokens": 1,
                }
                headers = {"x-session-id": f"setup{slot}-{index}"}
                started = time.perf_counter()
                response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"request failed: {response.status_code} {response.text[:200]}")
                if index >= 50:  # the first 50 warm connections and caches
                    timings[slot].append(elapsed)
    finally:
        for client in clients:
            client.close()
    return timings


def _note_cost_us(calls: int = 20_000) -> float:
    """Microseconds per HomeShare.note: the shared-state work on a decision's path."""

    async def run() -> float:
        share = HomeShare(store=MemoryStateStore(), policy=TieredPolicy(), origin="bench")
        started = time.perf_counter()
        for index in range(calls):
            share.note(f"session-{index}", "r1")
        return (time.perf_counter() - started) / calls * 1e6

    return asyncio.run(run())


def latency(requests: int) -> None:
    labels = ["1 router, memory://", "1 router, redis", "2 routers, redis (to the 1st)"]
    with (
        tempfile.TemporaryDirectory(prefix="pcache-bench-") as tmp,
        SimFleet(replicas=2, t0_ms=0) as sim,
        RedisServer(Path(tmp) / "redis") as redis_server,
        _routers(sim, Path(tmp) / "memory", 1, None) as alone,
        _routers(sim, Path(tmp) / "redis1", 1, f"{redis_server.url}?prefix=one") as shared_one,
        _routers(sim, Path(tmp) / "redis2", 2, f"{redis_server.url}?prefix=two") as shared_two,
    ):
        urls = [alone[0].url, shared_one[0].url, shared_two[0].url]
        timings = _interleaved_latency(urls, requests)
        spreads = [_propagation_ms(shared_two, f"idle-{i}") for i in range(5)]
    baseline = statistics.median(timings[0]) * 1e3
    print(f"\nshared state on the request path ({requests} sequential requests per setup, interleaved,")
    print("each a new session home)")
    print(f"{'setup':<32}{'p50 ms':>10}{'p95 ms':>10}{'added p50 ms':>14}")
    for label, values in zip(labels, timings, strict=True):
        p50 = statistics.median(values) * 1e3
        print(f"{label:<32}{p50:>10.3f}{_percentile(values, 0.95) * 1e3:>10.3f}{p50 - baseline:>14.3f}")
    print(f"in-process: queueing a new home for the write-behind publisher costs {_note_cost_us():.2f} us")
    listed = ", ".join(f"{s:.0f}" for s in spreads)
    print(f"a pin made through one router is listed by both (idle routers), ms: {listed}")


def _workload(seed: int) -> Workload:
    return Workload(
        prompts=default_prompts(), session_rate=4.0, turns=(4, 8), think_time_s=0.3,
        user_chars=(400, 1200), max_tokens=8, seed=seed,
    )  # fmt: skip


def _load(
    url: str, seed: int, *, requests: int | None = None, duration_s: float | None = None
) -> LoadSummary:
    async def run() -> LoadSummary:
        limits = LoadLimits(max_requests=requests, duration_s=duration_s, max_sessions=64)
        generator = LoadGenerator(url, _workload(seed), limits)
        try:
            return await generator.run()
        finally:
            await generator.aclose()

    return asyncio.run(run())


def hitrate(requests: int, seed: int) -> None:
    results: list[tuple[str, LoadSummary]] = []
    with tempfile.TemporaryDirectory(prefix="pcache-bench-") as tmp:
        base = Path(tmp)
        with SimFleet(replicas=4) as sim, _routers(sim, base / "one", 1, None) as routers:
            results.append(("1 router", _load(routers[0].url, seed, requests=requests)))
        with (
            SimFleet(replicas=4) as sim,
            RedisServer(base / "redis") as redis_server,
            _routers(sim, base / "three", 3, redis_server.url) as routers,
            HAProxy({f"r{i}": r.url for i, r in enumerate(routers)}, base / "haproxy") as lb,
        ):
            results.append(("3 routers + HAProxy", _load(lb.url, seed, requests=requests)))
    print(f"\nfleet hit rate, same workload (seed {seed}, {requests} requests), 4 simulated replicas")
    print(f"{'setup':<22}{'requests':>10}{'errors':>8}{'hit rate':>10}{'vs 1 router':>13}")
    single = results[0][1].cached_ratio or 0.0
    for label, summary in results:
        ratio = summary.cached_ratio or 0.0
        errors = sum(summary.errors.values())
        relative = ratio / single if single else 0.0
        kinds = f"  {summary.errors}" if summary.errors else ""
        print(f"{label:<22}{summary.requests:>10}{errors:>8}{ratio:>10.3f}{relative:>12.3f}x{kinds}")


def _propagation_ms(routers: list[RouterProcess], name: str) -> float:
    """Milliseconds from a pin's acknowledgement by the first router until every router lists it."""
    with routers[0].admin() as admin:
        admin.pin(name, PinIn(text=SYSTEM, copies=1))
    pinned_at = time.monotonic()
    for router in routers:
        with router.admin() as admin:
            while name not in [p.name for p in admin.pins()]:
                time.sleep(0.01)
    return (time.monotonic() - pinned_at) * 1e3


def outage(outage_s: float) -> None:
    with tempfile.TemporaryDirectory(prefix="pcache-bench-") as tmp, SimFleet(replicas=3) as sim:
        base = Path(tmp)
        with (
            RedisServer(base / "redis") as redis_server,
            _routers(sim, base, 3, redis_server.url) as routers,
            HAProxy({f"r{i}": r.url for i, r in enumerate(routers)}, base / "haproxy") as lb,
        ):
            summary: list[LoadSummary] = []
            loader = threading.Thread(
                target=lambda: summary.append(_load(lb.url, 7, duration_s=outage_s + 10))
            )
            loader.start()
            time.sleep(3)  # load running before the outage (a benchmark's timeline, not a wait)
            before_ms = _propagation_ms(routers, "before-outage")
            redis_server.stop()
            stopped = time.monotonic()
            time.sleep(outage_s / 2)
            with routers[0].admin() as admin:
                try:
                    admin.pin("during-outage", PinIn(text=SYSTEM, copies=1))
                    write = "accepted (unexpected)"
                except ApiError as exc:
                    write = f"{exc.status} {exc.code}"
            time.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))
            redis_server.start()
            with routers[0].admin() as admin:
                while admin.status().router.state_error is not None:
                    time.sleep(0.05)
            converged_ms = _propagation_ms(routers, "after-outage")
            loader.join()
    result = summary[0]
    print(f"\nRedis stopped {outage_s:g}s under load, 3 routers behind HAProxy")
    print(f"{'requests':>10}{'failed':>8}  {'write during outage':<24}{'pin reaches all routers':>26}")
    failed = sum(result.errors.values())
    spread = f"{before_ms:.0f} ms before / {converged_ms:.0f} ms after"
    print(f"{result.requests:>10}{failed:>8}  {write:<24}{spread:>26}  {result.errors or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="latency,hitrate,outage", help="comma-separated parts to run")
    parser.add_argument("--requests", type=int, default=500, help="latency: sequential requests per setup")
    parser.add_argument("--load-requests", type=int, default=600, help="hitrate: requests per setup")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=10.0)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if "latency" in parts:
        latency(args.requests)
    if "hitrate" in parts:
        hitrate(args.load_requests, args.seed)
    if "outage" in parts:
        outage(args.outage_s)


if __name__ == "__main__":
    main()
