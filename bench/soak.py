"""Soak: many requests through a real router while replicas fail at random; nothing may be lost.

    .venv/bin/python bench/soak.py                                  # 20,000 requests, 200 concurrent
    .venv/bin/python bench/soak.py --requests 300 --concurrency 30 --json out.json

A ``pcache sim`` fleet and a ``pcache router serve`` process run on loopback. An aiohttp client
sends chat requests (half streamed) with a unique ``x-request-id`` each, over shared system prompts
and a pool of sessions, while a fault injector keeps switching random faults on and off on all
replicas but the last (500s before the first byte, mid-stream deaths, failed health checks, slowness).

Every request must end as exactly one of: a success (a complete body; a stream ending in
``[DONE]`` with no error event) or an explicit error (an OpenAI-style error status/body, or an SSE
error event). Anything else (a reset, a timeout, a truncated stream) is *lost*. The run is checked
end to end: the router's response counter grew by exactly the number of requests; the replicas'
``vllm:request_success_total{finished_reason="length"}`` grew by exactly the number of successes
(no request executed twice); every success carries a distinct completion id (none delivered twice).
The router's open file descriptors (by kind, from ``/proc/<pid>/fd`` and ``/proc/<pid>/net/tcp``) and
RSS are read at the start (after a warm-up at full concurrency) and at the end: no client connection
may outlive the clients, no socket may sit in CLOSE_WAIT, no other fd may appear, and the upstream
pool may not exceed each replica's peak concurrency. Prints one table; ``--json`` writes the
figures. Exit code 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pcache.engines.exposition import parse_samples
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

MODEL = "sim-model"
SYSTEMS = [
    f"You are assistant {i} of the ACME support fleet. Answer briefly and cite the article you used. " * 6
    for i in range(4)
]
FAULTS: list[dict[str, Any]] = [
    {"error_rate": 0.5},
    {"error_rate": 1.0},
    {"die_after_chunks": 2},
    {"unhealthy": True},
    {"slow_factor": 4.0},
]
CLEAR = {"error_rate": 0.0, "die_after_chunks": None, "unhealthy": False, "slow_factor": 1.0}


@dataclass
class Figures:
    requests: int
    concurrency: int
    seconds: float = 0.0
    ok: int = 0
    explicit_errors: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    duplicate_completion_ids: int = 0
    router_responses: float = 0.0
    replica_successes: float = 0.0
    retries: float = 0.0
    faults_injected: int = 0
    fds_start: int = 0
    fds_end: int = 0
    sockets_start: dict[str, int] = field(default_factory=dict)
    sockets_end: dict[str, int] = field(default_factory=dict)
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    by_replica: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_TCP_STATES = {"0A": "listen", "08": "close_wait"}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _sockets(pid: int, data_port: int, replica_ports: set[int]) -> dict[str, int]:
    """The router's fds by kind: client connections (to the data plane), upstream connections (to a
    replica), listeners, sockets in CLOSE_WAIT (peer gone, never closed: a leak), everything else."""
    inodes: set[str] = set()
    counts = dict.fromkeys(("client", "upstream", "listen", "close_wait", "other_socket", "non_socket"), 0)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
        else:
            counts["non_socket"] += 1
    seen: set[str] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            inode = fields[9]
            if inode not in inodes or inode in seen:
                continue
            seen.add(inode)
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            state = _TCP_STATES.get(fields[3])
            if state is not None:
                counts[state] += 1
            elif local == data_port:
                counts["client"] += 1
            elif remote in replica_ports:
                counts["upstream"] += 1
            else:
                counts["other_socket"] += 1
    counts["other_socket"] += len(inodes - seen)  # unix sockets, socketpairs
    return counts


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _sum_samples(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    return parse_samples(text).total(name, **labels) or 0.0


class _Client:
    """Sends one request and classifies its outcome."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, figures: Figures, rng: random.Random
    ) -> None:
        self.session = session
        self.base = base
        self.figures = figures
        self.rng = rng
        self.completion_ids: Counter[str] = Counter()

    def _error(self, kind: str) -> None:
        self.figures.explicit_errors[kind] = self.figures.explicit_errors.get(kind, 0) + 1

    def _lost(self, request_id: str, why: str) -> None:
        self.figures.lost += 1
        if len(self.figures.lost_examples) < 10:
            self.figures.lost_examples.append(f"{request_id}: {why}")

    async def send(self, number: int, count: bool = True) -> None:
        request_id = f"soak-{number}"
        session_id = f"s{self.rng.randrange(2000)}"
        stream = number % 2 == 1
        body = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": SYSTEMS[number % len(SYSTEMS)]},
                {"role": "user", "content": f"question {number} from {session_id}"},
            ],
            "max_tokens": 6,
            "stream": stream,
        }
        headers = {"content-type": "application/json", "x-request-id": request_id, "x-session-id": session_id}
        try:
            async with self.session.post(
                f"{self.base}/v1/chat/completions", data=json.dumps(body), headers=headers
            ) as response:
                raw = await response.read()
                replica = response.headers.get("x-pcache-replica", "?")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if count:
                self._lost(request_id, f"{type(exc).__name__}: {exc}")
            return
        if not count:
            return
        self._classify(request_id, status, raw, stream, replica)

    def _classify(self, request_id: str, status: int, raw: bytes, stream: bool, replica: str) -> None:
        if status != 200:
            try:
                error = json.loads(raw)["error"]
                assert isinstance(error["message"], str) and error["type"]
            except (ValueError, KeyError, TypeError, AssertionError):
                self._lost(request_id, f"HTTP {status} without an OpenAI error body: {raw[:120]!r}")
                return
            self._error(f"HTTP {status} {error.get('code')}")
            return
        if not stream:
            try:
                payload = json.loads(raw)
                completion_id = payload["id"]
                assert payload["choices"][0]["message"]["content"] is not None
            except (ValueError, KeyError, TypeError, IndexError, AssertionError):
                self._lost(request_id, f"200 with an unreadable body: {raw[:120]!r}")
                return
            self._ok(completion_id, replica)
            return
        events = [
            line[6:] for line in raw.decode("utf-8", "replace").split("\n") if line.startswith("data: ")
        ]
        if not events or events[-1] != "[DONE]":
            self._lost(request_id, f"stream without [DONE]: {raw[-120:]!r}")
            return
        if any(event.startswith('{"error"') for event in events):
            self._error("stream error event")
            return
        try:
            chunks = [json.loads(event) for event in events[:-1]]
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
            completion_id = chunks[0]["id"]
        except (ValueError, KeyError, IndexError, AssertionError):
            self._lost(request_id, f"stream ended without a finished choice: {raw[-160:]!r}")
            return
        self._ok(completion_id, replica)

    def _ok(self, completion_id: str, replica: str) -> None:
        self.figures.ok += 1
        self.completion_ids[completion_id] += 1
        self.figures.by_replica[replica] = self.figures.by_replica.get(replica, 0) + 1


async def _inject_faults(
    sim_urls: dict[str, str], interval_s: float, stop: asyncio.Event, rng: random.Random, figures: Figures
) -> None:
    """Switch random faults on and off on every replica but the last, until ``stop``."""
    victims = sorted(sim_urls)[:-1]
    active: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def post(name: str, change: dict[str, Any]) -> None:
            async with session.post(f"{sim_urls[name]}/sim/faults", json=change) as response:
                response.raise_for_status()

        while not stop.is_set():
            now = time.monotonic()
            for name, until in list(active.items()):
                if now >= until:
                    await post(name, CLEAR)
                    del active[name]
            idle = [v for v in victims if v not in active]
            if idle:
                name = rng.choice(idle)
                await post(name, rng.choice(FAULTS))
                active[name] = now + rng.uniform(interval_s, 4 * interval_s)
                figures.faults_injected += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        for name in list(active):
            await post(name, CLEAR)


async def _run(router: RouterProcess, sim: SimFleet, args: argparse.Namespace, figures: Figures) -> None:
    rng = random.Random(args.seed)
    pid = router.process.pid if router.process is not None else 0
    ports = {_port(url) for url in sim.urls.values()}
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = _Client(session, router.url, figures, rng)
        # Warm-up at full concurrency (not counted) so every pool is at its working size.
        await asyncio.gather(*(client.send(-1 - i, count=False) for i in range(args.concurrency * 2)))
        await asyncio.sleep(0.5)
        figures.fds_start, figures.rss_start_kib = _fds(pid), _rss_kib(pid)
        figures.sockets_start = _sockets(pid, _port(router.url), ports)
        metrics = await _texts(session, router, sim)
        responses_before = _sum_samples(metrics["router"], "pcache_responses_total")
        retries_before = _sum_samples(metrics["router"], "pcache_retries_total")
        successes_before = sum(
            _sum_samples(metrics[n], "vllm:request_success_total", finished_reason="length") for n in sim.urls
        )

        stop = asyncio.Event()
        injector = asyncio.create_task(_inject_faults(sim.urls, args.fault_interval, stop, rng, figures))
        queue = iter(range(args.requests))
        started = time.perf_counter()

        async def worker() -> None:
            for number in queue:
                await client.send(number)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        figures.seconds = time.perf_counter() - started
        stop.set()
        await injector
        figures.duplicate_completion_ids = sum(n - 1 for n in client.completion_ids.values() if n > 1)

        metrics = await _texts(session, router, sim)
        figures.router_responses = (
            _sum_samples(metrics["router"], "pcache_responses_total") - responses_before
        )
        figures.retries = _sum_samples(metrics["router"], "pcache_retries_total") - retries_before
        figures.replica_successes = (
            sum(
                _sum_samples(metrics[n], "vllm:request_success_total", finished_reason="length")
                for n in sim.urls
            )
            - successes_before
        )
    await asyncio.sleep(1.0)  # let the router notice the closed client connections
    figures.fds_end, figures.rss_end_kib = _fds(pid), _rss_kib(pid)
    figures.sockets_end = _sockets(pid, _port(router.url), ports)


async def _texts(session: aiohttp.ClientSession, router: RouterProcess, sim: SimFleet) -> dict[str, str]:
    texts = {}
    for name, url in [("router", router.url), *sim.urls.items()]:
        async with session.get(f"{url}/metrics") as response:
            texts[name] = await response.text()
    return texts


def _check(figures: Figures, concurrency: int, replicas: int) -> None:
    accounted = figures.ok + sum(figures.explicit_errors.values()) + figures.lost
    start, end = figures.sockets_start, figures.sockets_end
    checks = [
        (figures.lost == 0, f"{figures.lost} requests lost: {figures.lost_examples}"),
        (accounted == figures.requests, f"{accounted} outcomes for {figures.requests} requests"),
        (
            figures.router_responses == figures.requests,
            f"router answered {figures.router_responses:.0f} times for {figures.requests} requests",
        ),
        (
            figures.replica_successes == figures.ok,
            f"replicas completed {figures.replica_successes:.0f} requests, clients got {figures.ok}",
        ),
        (
            figures.duplicate_completion_ids == 0,
            f"{figures.duplicate_completion_ids} completions delivered twice",
        ),
        # A leak is an fd that outlives its request. Each replica's keep-alive pool may hold up to
        # that replica's peak concurrency (faults move the peaks around), plus health checks and
        # scrapes; a connection the replica closed and the router kept would sit in CLOSE_WAIT.
        (
            end.get("client", 0) == 0,
            f"{end.get('client')} client connections still open after the clients left",
        ),
        (end.get("close_wait", 0) == 0, f"{end.get('close_wait')} sockets left in CLOSE_WAIT"),
        (
            end.get("non_socket", 0) <= start.get("non_socket", 0) + 2,
            f"non-socket fds grew from {start.get('non_socket')} to {end.get('non_socket')}",
        ),
        (
            end.get("upstream", 0) <= (concurrency + 2) * replicas,
            f"{end.get('upstream')} upstream connections for {concurrency} concurrent requests",
        ),
    ]
    figures.failures = [message for ok, message in checks if not ok]


def _table(figures: Figures, command: str) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(figures.explicit_errors.items())) or "none"
    rows = [
        ("command", command),
        (
            "requests",
            f"{figures.requests} at concurrency {figures.concurrency} in {figures.seconds:.1f} s "
            f"({figures.requests / max(figures.seconds, 1e-9):.0f} req/s)",
        ),
        ("faults injected", f"{figures.faults_injected} (on all replicas but the last)"),
        ("successes", str(figures.ok)),
        ("explicit errors", f"{sum(figures.explicit_errors.values())} ({errors})"),
        ("lost", str(figures.lost)),
        ("retries (router)", f"{figures.retries:.0f}"),
        ("router responses", f"{figures.router_responses:.0f}"),
        ("replica completions", f"{figures.replica_successes:.0f}"),
        ("completions delivered twice", str(figures.duplicate_completion_ids)),
        ("router open fds", f"{figures.fds_start} -> {figures.fds_end}"),
        ("  by kind, start", ", ".join(f"{k} {v}" for k, v in figures.sockets_start.items())),
        ("  by kind, end", ", ".join(f"{k} {v}" for k, v in figures.sockets_end.items())),
        ("router RSS", f"{figures.rss_start_kib / 1024:.1f} MiB -> {figures.rss_end_kib / 1024:.1f} MiB"),
        ("successes by replica", ", ".join(f"{k}: {v}" for k, v in sorted(figures.by_replica.items()))),
        ("checks", "all passed" if not figures.failures else "FAILED: " + "; ".join(figures.failures)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--fault-interval", type=float, default=0.5, help="seconds between fault changes")
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument(
        "--client", choices=["aiohttp", "httpx"], default="aiohttp", help="router upstream client"
    )
    parser.add_argument(
        "--retries",
        type=int,
        help="router upstream.retries (default: replicas - 1, so every candidate is tried)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas must be at least 2 (the last one is never faulted)")
    if args.retries is None:
        args.retries = min(10, args.replicas - 1)
    figures = Figures(requests=args.requests, concurrency=args.concurrency)
    command = "bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with (
        tempfile.TemporaryDirectory(prefix="pcache-soak-") as state,
        SimFleet(replicas=args.replicas, max_num_seqs=512, inter_token_ms=0.5) as sim,
        RouterProcess(
            replicas=sim.urls,
            state_dir=state,
            log_level="warning",
            health={"interval_s": 0.25, "failures": 2, "recoveries": 1},
            upstream={"client": args.client, "retries": args.retries},
        ) as router,
    ):
        asyncio.run(_run(router, sim, args, figures))
    _check(figures, args.concurrency, args.replicas)
    print(_table(figures, command.strip()))
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())
