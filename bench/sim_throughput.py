"""How many requests per second a simulated fleet sustains on this machine (demo timing).

    .venv/bin/python bench/sim_throughput.py --replicas 4 --concurrency 128 --duration 5

Starts ``pcache sim`` as a subprocess on free ports, drives it with aiohttp from this process (so
the load generator shares the CPU with the fleet, like a demo on one box) and prints a table.
Server-side TTFT percentiles come from the replicas' merged ``vllm:time_to_first_token_seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
from rich.console import Console
from rich.table import Table

from pcache.engines import parse_metrics
from pcache.engines.histogram import merge_buckets, quantile
from pcache.testing.sim import SimFleet


@dataclass
class Result:
    ok: int = 0
    errors: int = 0
    cached_tokens: int = 0
    prompt_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    ttft_p50: float | None = None
    ttft_p99: float | None = None


def prompt_for(index: int, args: argparse.Namespace) -> str:
    """A prompt with a shared system prefix (so some work is cached) and a unique tail."""
    shared = "System: you are a helpful simulated assistant. " * (args.prompt_tokens // 12)
    return f"{shared}User #{index}: tell me something new."


async def worker(
    session: aiohttp.ClientSession, urls: list[str], counter: itertools.count[int], deadline: float,
    result: Result, args: argparse.Namespace,
) -> None:  # fmt: skip
    while time.perf_counter() < deadline:
        index = next(counter)
        url = urls[index % len(urls)]
        body = {"model": "sim-model", "prompt": prompt_for(index, args), "max_tokens": args.max_tokens}
        if args.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        try:
            async with session.post(f"{url}/v1/completions", json=body) as response:
                if response.status != 200:
                    result.errors += 1
                    await response.read()
                    continue
                if args.stream:
                    tail = b""
                    async for chunk in response.content.iter_any():  # bytes as they arrive
                        tail = (tail + chunk)[-14:]
                    if tail != b"data: [DONE]\n\n":
                        result.errors += 1
                        continue
                else:
                    usage = (await response.json())["usage"]
                    result.cached_tokens += usage["prompt_tokens_details"]["cached_tokens"]
                    result.prompt_tokens += usage["prompt_tokens"]
        except aiohttp.ClientError:
            result.errors += 1
            continue
        result.ok += 1
        result.latencies.append(time.perf_counter() - started)


async def drive(urls: dict[str, str], args: argparse.Namespace) -> Result:
    result = Result()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm_deadline = time.perf_counter() + 0.5
        await asyncio.gather(
            *(worker(session, list(urls.values()), itertools.count(), warm_deadline, Result(), args)
              for _ in range(min(args.concurrency, 8)))
        )  # fmt: skip
        started = time.perf_counter()
        deadline = started + args.duration
        counter = itertools.count(1_000_000)
        await asyncio.gather(
            *(
                worker(session, list(urls.values()), counter, deadline, result, args)
                for _ in range(args.concurrency)
            )
        )
        result.elapsed = time.perf_counter() - started
        ttft = []
        for url in urls.values():
            async with session.get(f"{url}/metrics") as response:
                ttft.append(parse_metrics(await response.text()).ttft_buckets)
    result.latencies.sort()
    merged = merge_buckets(ttft)  # cumulative since the fleet started, warm-up and earlier modes included
    result.ttft_p50, result.ttft_p99 = quantile(merged, 0.5), quantile(merged, 0.99)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=128, help="client connections in flight")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measured load")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--mode", choices=("json", "sse", "both"), default="both")
    args = parser.parse_args()
    rows: list[tuple[str, Result]] = []
    with SimFleet(replicas=args.replicas, max_num_seqs=args.max_num_seqs) as fleet:
        for mode in ("json", "sse") if args.mode == "both" else (args.mode,):
            args.stream = mode == "sse"
            rows.append((mode, asyncio.run(drive(fleet.urls, args))))
    table = Table(
        title=f"pcache sim throughput: {args.replicas} replicas, demo timing, {args.duration:g}s per mode"
    )
    for column in ("mode", "in flight", "requests", "errors", "req/s", "p50 ms", "p99 ms",
                   "TTFT p50 ms", "TTFT p99 ms", "cached %"):  # fmt: skip
        table.add_column(column, justify="right")
    for mode, result in rows:
        lat = result.latencies
        p50 = statistics.median(lat) * 1e3 if lat else float("nan")
        p99 = lat[max(int(len(lat) * 0.99) - 1, 0)] * 1e3 if lat else float("nan")
        cached = 100 * result.cached_tokens / result.prompt_tokens if result.prompt_tokens else None
        table.add_row(
            mode, str(args.concurrency), str(result.ok), str(result.errors),
            f"{result.ok / result.elapsed:,.0f}", f"{p50:.1f}", f"{p99:.1f}",
            f"{(result.ttft_p50 or 0) * 1e3:.2f}", f"{(result.ttft_p99 or 0) * 1e3:.2f}",
            "-" if cached is None else f"{cached:.0f}",
        )  # fmt: skip
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
