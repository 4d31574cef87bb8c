"""Latency of one ``route()`` call: a 32-block fingerprint over 16 replicas, every policy.

    .venv/bin/python bench/route_latency.py
    .venv/bin/python bench/route_latency.py --blocks 64 --replicas 32 --calls 50000

Each policy is first warmed with a stream of requests shaped like chat traffic (a shared 8-block
system prompt, then per-session turns that extend their history), so session tables, cache indexes
and the hot-prefix detector hold realistic state; then every measured call routes the next request
of that stream against a fleet view whose loads change from call to call. Prints the median, p90 and
p99 per call in microseconds (one ``perf_counter_ns`` pair around each call). ``--pending N`` also
gives every replica a random queue of up to N prefill tokens, drawn afresh for every call: a stress
case for ``tiered``, whose sessions then keep leaving busy homes and re-filling the cache index.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from rich.console import Console
from rich.table import Table

from pcache.fingerprint import Fingerprint, SessionSource
from pcache.fleet_view import FleetView, ReplicaView
from pcache.policy import POLICY_NAMES, make_policy

SYSTEM_BLOCKS = 8


def requests(count: int, blocks: int, sessions: int, seed: int) -> list[Fingerprint]:
    """Chat-like fingerprints: a shared system prompt, then each session's own growing history."""
    rng = random.Random(seed)
    system = tuple(rng.getrandbits(64) for _ in range(SYSTEM_BLOCKS))
    histories = {
        s: tuple(rng.getrandbits(64) for _ in range(blocks - SYSTEM_BLOCKS)) for s in range(sessions)
    }
    out = []
    for _ in range(count):
        session = rng.randrange(sessions)
        own = histories[session]
        out.append(
            Fingerprint(
                blocks=(system + own)[:blocks],
                session=f"s{session}",
                prompt_tokens=blocks * 64,
                block_tokens=64,
                session_source=SessionSource.HEADER,
            )
        )
    return out


def fleets(count: int, replicas: int, seed: int, pending: int) -> list[FleetView]:
    """Fleet views with random loads (and, if ``pending``, random queued prefill up to it)."""
    rng = random.Random(seed)
    return [
        FleetView(
            tuple(
                ReplicaView(
                    f"r{i}",
                    load=rng.randrange(0, 12),
                    pending_tokens=rng.randrange(0, pending) if pending else 0,
                )
                for i in range(1, replicas + 1)
            )
        )
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument(
        "--pending",
        type=int,
        default=0,
        help="random queued prefill per replica up to this many tokens (0: unknown, as the live router)",
    )
    args = parser.parse_args()

    views = fleets(64, args.replicas, seed=1, pending=args.pending)
    warm = requests(args.warmup, args.blocks, args.sessions, seed=2)
    measured = requests(args.calls, args.blocks, args.sessions, seed=3)
    title = (
        f"route() latency: {args.blocks}-block fingerprint, {args.replicas} replicas, {args.calls:,} calls"
    )
    if args.pending:
        title += f", queued prefill 0-{args.pending:,} tokens per replica (changes every call)"
    table = Table(title=title, title_justify="left")
    for column in ("policy", "median µs", "p90 µs", "p99 µs", "mean µs"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in POLICY_NAMES:
        policy = make_policy(name)
        for i, fingerprint in enumerate(warm):
            policy.route(fingerprint, views[i % len(views)])
        samples = []
        clock = time.perf_counter_ns
        for i, fingerprint in enumerate(measured):
            view = views[i % len(views)]
            start = clock()
            policy.route(fingerprint, view)
            samples.append(clock() - start)
        samples.sort()
        table.add_row(
            name,
            f"{statistics.median(samples) / 1000:.1f}",
            f"{samples[int(0.9 * len(samples))] / 1000:.1f}",
            f"{samples[int(0.99 * len(samples))] / 1000:.1f}",
            f"{statistics.fmean(samples) / 1000:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
