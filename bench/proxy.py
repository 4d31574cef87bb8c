"""Proxy overhead: the same client load straight to a simulated replica and through a router.

    .venv/bin/python bench/proxy.py                 # pcache (aiohttp and httpx upstream) + sglang-router
    .venv/bin/python bench/proxy.py --quick         # fewer requests
    .venv/bin/python bench/proxy.py --no-sglang --clients aiohttp

One ``pcache sim`` replica (fast timing, big queue) serves every run. For each target (direct,
pcache router with each upstream client, sglang-router when installed) and each mode
(non-streamed, streamed) and concurrency (1, 32, 256), an aiohttp client sends chat requests with an
8 KB prompt and records per-request latency (and time to first byte for streams). Reported: p50/p99,
requests/s, added latency against direct (difference of the percentiles), and the router process's
own CPU time per request from ``/proc/<pid>/stat`` (utime + stime), so the client and the replica
sharing the cores do not blur it. Prints one table (and ``--json`` writes the rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx

from pcache.testing.ports import free_port
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

MODEL = "sim-model"
PROMPT = ("The quick brown fox jumps over the lazy dog while the router measures itself. " * 110)[:8192]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float | None
    rps: float
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    cpu_ms_per_request: float | None = None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(
    base: str, stream: bool, concurrency: int, total: int
) -> tuple[list[float], list[float], int, float]:
    """Send ``total`` requests with ``concurrency`` workers; (latencies, ttfbs, errors, seconds)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": "Summarise."}],
        "max_tokens": 8,
        "stream": stream,
    }
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors = 0
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    async with session.post(
                        f"{base}/v1/chat/completions",
                        data=payload,
                        headers={"content-type": "application/json"},
                    ) as response:
                        first = None
                        async for _ in response.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                        if response.status != 200:
                            errors += 1
                            continue
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                done = time.perf_counter()
                latencies.append(done - started)
                ttfbs.append((first or done) - started)

        # warm the connection pools first
        remaining_before = remaining
        remaining = min(concurrency, remaining_before)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        latencies.clear()
        ttfbs.clear()
        errors = 0
        remaining = remaining_before
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, ttfbs, errors, elapsed


def _measure(target: str, base: str, pid: int | None, stream: bool, concurrency: int, total: int) -> Row:
    cpu_before = _cpu_seconds(pid) if pid else None
    latencies, ttfbs, errors, elapsed = asyncio.run(_load(base, stream, concurrency, total))
    cpu_after = _cpu_seconds(pid) if pid else None
    done = max(1, len(latencies))
    cpu = (cpu_after - cpu_before) / (done + errors) * 1000 if cpu_before is not None and cpu_after else None
    return Row(
        target=target,
        mode="stream" if stream else "non-stream",
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        p50_ms=_percentile(latencies, 0.5) * 1000 if latencies else float("nan"),
        p99_ms=_percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
        ttfb_p50_ms=_percentile(ttfbs, 0.5) * 1000 if stream and ttfbs else None,
        rps=len(latencies) / elapsed if elapsed else 0.0,
        cpu_ms_per_request=cpu,
    )


class SglangRouter:
    """``python -m sglang_router.launch_router`` in front of the same replica."""

    def __init__(self, worker: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sglang_router.launch_router",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--worker-urls",
                worker,
                "--policy",
                "cache_aware",
                "--log-level",
                "warn",
                "--disable-retries",
                "--prometheus-port",
                str(free_port()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        probe = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                detail = self.process.stderr.read()[-2000:] if self.process.stderr else ""
                raise RuntimeError(f"sglang-router exited with {self.process.returncode}: {detail}")
            try:
                if httpx.post(f"{self.url}/v1/chat/completions", json=probe, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("sglang-router did not answer a chat completion within 60 s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process.stderr:
            self.process.stderr.close()


def _table(rows: list[Row]) -> str:
    header = (
        f"{'target':<16} {'mode':<10} {'conc':>4} {'reqs':>5} {'err':>3} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'ttfb50':>7} {'req/s':>7} {'+p50 ms':>8} {'+p99 ms':>8} {'cpu ms/req':>10}"
    )
    lines = [header, "-" * len(header)]

    def fmt(value: float | None, width: int, digits: int = 2) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for r in rows:
        lines.append(
            f"{r.target:<16} {r.mode:<10} {r.concurrency:>4} {r.requests:>5} {r.errors:>3} {r.p50_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {fmt(r.ttfb_p50_ms, 7)} {r.rps:>7.0f} {fmt(r.added_p50_ms, 8)} "
            f"{fmt(r.added_p99_ms, 8)} {fmt(r.cpu_ms_per_request, 10, 3)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests per cell")
    parser.add_argument("--concurrency", default="1,32,256")
    parser.add_argument("--clients", default="aiohttp,httpx", help="pcache upstream clients to measure")
    parser.add_argument("--no-sglang", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    def total_for(concurrency: int) -> int:
        base = {1: 1000, 32: 3000, 256: 4000}.get(concurrency, 20 * concurrency)
        return max(concurrency * 4, base // 4 if args.quick else base)

    rows: list[Row] = []
    with SimFleet(
        replicas=1, t0_ms=0.2, per_token_us=0.0, inter_token_ms=0.1, max_num_seqs=1024, num_gpu_blocks=65536
    ) as sim:
        replica = sim.urls["r1"]
        targets: list[tuple[str, str, int | None, object]] = [("direct", replica, None, None)]
        for client in args.clients.split(","):
            router = RouterProcess(
                replicas={"r1": replica},
                upstream={"client": client, "max_connections": 2048},
                log_level="warning",
            ).start()
            targets.append(
                (f"pcache/{client}", router.url, router.process.pid if router.process else None, router)
            )
        if not args.no_sglang:
            try:
                sglang = SglangRouter(replica)
                targets.append(("sglang-router", sglang.url, sglang.pid, sglang))
            except (RuntimeError, OSError) as exc:
                print(f"sglang-router not measured: {exc}", file=sys.stderr)
        try:
            for stream in (False, True):
                for concurrency in levels:
                    direct: Row | None = None
                    for name, url, pid, _ in targets:
                        row = _measure(name, url, pid, stream, concurrency, total_for(concurrency))
                        if name == "direct":
                            direct = row
                        elif direct is not None:
                            row.added_p50_ms = row.p50_ms - direct.p50_ms
                            row.added_p99_ms = row.p99_ms - direct.p99_ms
                        rows.append(row)
                        print(_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
        finally:
            for _, _, _, handle in targets:
                if isinstance(handle, RouterProcess | SglangRouter):
                    handle.stop()
    print(_table(rows))
    ratios = []
    for row in rows:
        if row.target != "sglang-router":
            continue
        for other in rows:
            if other.target.startswith("pcache/") and (other.mode, other.concurrency) == (
                row.mode,
                row.concurrency,
            ):
                ratios.append(
                    f"{other.target} vs sglang-router, {row.mode} c={row.concurrency}: "
                    f"req/s x{other.rps / row.rps:.2f}, p50 x{other.p50_ms / row.p50_ms:.2f}"
                    + (
                        f", cpu/req x{other.cpu_ms_per_request / row.cpu_ms_per_request:.2f}"
                        if other.cpu_ms_per_request and row.cpu_ms_per_request
                        else ""
                    )
                )
    if ratios:
        print("\n" + "\n".join(ratios))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
