"""Memory under a million distinct sessions and prefixes: the routing core's LRU caps must hold.

    .venv/bin/python bench/memory.py                           # 1,000,000 requests, daemon defaults
    .venv/bin/python bench/memory.py --max-sessions 100000     # a tighter session cap, to see it bind

In process, with no HTTP: every request goes through the same calls the proxy makes
(``Routing.fingerprint`` -> ``Routing.route`` -> ``Fleet.begin/end`` -> ``Routing.observe``), so the
policy (session homes, approximate cache index, hot-prefix detector), the ledger (windows, prefixes,
sessions) and the metrics all see it. Each request has a new session and a prompt whose very first
block is new, a tenth of them behind one of a few Tier-1 prefixes. The process's RSS (``VmRSS``) and
the number of session homes are printed at checkpoints, and at the end the time one status poll
takes to build with every table full (it runs on the event loop the data plane shares). The run
fails if the homes exceed the cap or if RSS keeps growing once every table is full (the last
quarter may add at most ``--slack-mib``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from pcache.fleet import Fleet
from pcache.fleet_view import Tier1Prefix
from pcache.ledger import Ledger
from pcache.policy import make_policy
from pcache.policy.base import Outcome
from pcache.prompt import FingerprintConfig, prefix_blocks
from pcache.router.error_window import ErrorWindow
from pcache.router.metrics import RouterMetrics
from pcache.router.routing import Routing
from pcache.router.snapshot import status_snapshot

TIER1 = [f"You are Tier-1 assistant {i}. Follow the house style guide to the letter. " * 8 for i in range(4)]
FILLER = "Please look at the attached order history and tell me what went wrong with delivery. " * 4


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--policy", default="tiered")
    parser.add_argument("--max-sessions", type=int, default=1_000_000, help="policy and ledger session caps")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--slack-mib", type=float, default=16.0)
    args = parser.parse_args(argv)

    config = FingerprintConfig()
    params = {"max_sessions": args.max_sessions} if args.policy == "tiered" else {}
    policy = make_policy(args.policy, **params)
    fleet = Fleet()
    for i in range(args.replicas):
        fleet.add(f"r{i + 1}", f"http://127.0.0.1:{9000 + i}")
    ledger = Ledger(max_sessions=args.max_sessions)
    routing = Routing(policy=policy, fleet=fleet, config=config, ledger=ledger, metrics=RouterMetrics())
    routing.set_tier1(
        Tier1Prefix(name=f"tier1-{i}", blocks=prefix_blocks(text, "chat", config), copies=2)
        for i, text in enumerate(TIER1)
    )
    gc.collect()
    rows = [(0, _rss_mib(), 0, 0.0)]
    step = max(1, args.requests // args.checkpoints)
    started = time.perf_counter()
    for number in range(args.requests):
        session = f"session-{number}"
        system = TIER1[number % len(TIER1)] if number % 10 == 0 else f"{number:010d} unique system prompt. "
        body = {
            "model": "m",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"{number} {FILLER}"},
            ],
        }
        fingerprint = routing.fingerprint(body, {"x-session-id": session})
        decision = routing.route(fingerprint)
        replica = decision.replica
        if replica is not None:
            fleet.begin(replica)
            fleet.end(replica)
            outcome = Outcome(
                replica=replica, ok=True, cached_tokens=0, prompt_tokens=fingerprint.prompt_tokens
            )
            routing.observe(fingerprint, decision, outcome)
        if (number + 1) % step == 0 or number + 1 == args.requests:
            gc.collect()
            homes = sum(policy.session_homes().values())
            rows.append((number + 1, _rss_mib(), homes, time.perf_counter() - started))
            print(
                f"{number + 1:>10,} requests  RSS {rows[-1][1]:7.1f} MiB  session homes {homes:>9,}  "
                f"{rows[-1][3]:6.1f} s",
                flush=True,
            )

    failures = []
    if any(homes > args.max_sessions for _, _, homes, _ in rows):
        failures.append(f"session homes exceeded the cap of {args.max_sessions:,}")
    quarter = [row for row in rows if row[0] >= args.requests * 3 // 4]
    full = args.max_sessions < args.requests * 3 // 4
    if full and quarter and quarter[-1][1] - quarter[0][1] > args.slack_mib:
        failures.append(
            f"RSS grew {quarter[-1][1] - quarter[0][1]:.1f} MiB over the last quarter with every table full"
        )
    # What one status poll (the console's, every second) costs with every table full: it runs on
    # the event loop the data plane shares.
    status_ms = []
    for _ in range(5):
        t0 = time.perf_counter()
        status_snapshot(
            fleet,
            owners=routing.owners(),
            ledger=ledger,
            errors=ErrorWindow(),
            sessions=policy.session_homes(),
            policy=policy.name,
            url="http://127.0.0.1:8080",
            admin_url="http://127.0.0.1:8081",
            started_at=time.time(),
            stale_after_s=10.0,
        )
        status_ms.append((time.perf_counter() - t0) * 1000)
    print()
    print(f"command        bench/memory.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"policy         {args.policy} over {args.replicas} replicas, session cap {args.max_sessions:,}")
    print(f"requests       {args.requests:,} (each a new session and a new first block)")
    print(f"RSS            {rows[0][1]:.1f} MiB at start -> {rows[-1][1]:.1f} MiB at the end")
    print(f"ledger         {len(ledger.hot_prefixes())} hot prefixes reported")
    print(f"rate           {args.requests / max(rows[-1][3], 1e-9):,.0f} requests/s through the routing core")
    print(f"status poll    {sorted(status_ms)[2]:.2f} ms median of 5 (/api/v1/status with every table full)")
    print(f"checks         {'all passed' if not failures else 'FAILED: ' + '; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
