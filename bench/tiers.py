"""A shared KV pool: tier-aware ``tiered`` against tier-blind ``tiered`` and round robin, one table.

    .venv/bin/python bench/tiers.py                          # 3 traces x 4 and 8 replicas x 10/40 ms pools
    .venv/bin/python bench/tiers.py --traces gsp_zipf1 --replicas 4 --pool-ms 10

Each cell is ``pcache replay --pool-ms MS`` (the router's own policy code over a simulated fleet
with finite LRU GPU caches and prefill queues, the defaults of an 8B model on one H100, plus a KV
pool the replicas share: every computed block written through, LRU at ``--pool-tokens``, loaded for
the pool's round trip plus ``--pool-load-tps``). ``tiered+tiers`` is ``tiered`` told the pool
(its capacity, and the credit and round trip derived from the same model); ``tiered`` is blind to
it. Columns: hit rate split into GPU and pool, TTFT p50/p90. The last column checks the issue's bar:
with a 10 ms pool, tier-aware TTFT p90 <= tier-blind's and round robin's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pcache.replay import ServiceModel, run_replay

TRACES = {
    "mooncake": "mooncake_conversation_trace.jsonl",
    "gsp_default": "synthetic_sglang_gsp_default.jsonl",
    "gsp_zipf1": "synthetic_sglang_gsp_zipf1.jsonl",
}
DATA_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "traces",
    Path("/work/shared/data/traces"),
)
LANES = ("round_robin", "tiered", "tiered+tiers")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=",".join(TRACES), help="comma-separated: " + ", ".join(TRACES))
    parser.add_argument("--replicas", default="4,8", help="comma-separated replica counts")
    parser.add_argument("--pool-ms", default="10,40", help="comma-separated pool round trips (ms)")
    parser.add_argument("--pool-tokens", type=int, default=4_000_000, help="pool capacity (tokens)")
    parser.add_argument("--pool-load-tps", type=float, default=200_000.0, help="pool transfer, tokens/s")
    parser.add_argument("--data", type=Path, help="directory of the traces")
    args = parser.parse_args()
    data = args.data or next((d for d in DATA_CANDIDATES if d.is_dir()), None)
    if data is None:
        print("error: no trace directory; pass --data", file=sys.stderr)
        return 2
    table = Table(
        title="Shared KV pool: tier-aware vs tier-blind tiered vs round robin", title_justify="left"
    )
    for column in ("TRACE", "N", "POOL", "POLICY", "HIT", "GPU", "POOL HIT", "TTFT P50", "TTFT P90", "BAR"):
        table.add_column(column, justify="left" if column in ("TRACE", "POLICY", "BAR") else "right")
    failures = 0
    for trace in args.traces.split(","):
        for replicas in (int(n) for n in args.replicas.split(",")):
            for pool_ms in (float(ms) for ms in args.pool_ms.split(",")):
                model = ServiceModel(
                    pool_tokens=args.pool_tokens,
                    pool_latency_s=pool_ms / 1000.0,
                    pool_tokens_per_s=args.pool_load_tps,
                )
                report = run_replay(data / TRACES[trace], list(LANES), replicas, model=model)
                by_name = {result.policy: result for result in report.results}
                aware = by_name["tiered+tiers"]
                others = min(by_name["tiered"].ttft_p90_s, by_name["round_robin"].ttft_p90_s)
                bar = ""
                if pool_ms == 10:
                    met = aware.ttft_p90_s <= others
                    failures += not met
                    bar = "met" if met else "NOT MET"
                for name in LANES:
                    result = by_name[name]
                    pool = result.pool_hit_rate or 0.0
                    table.add_row(
                        trace,
                        str(replicas),
                        f"{pool_ms:g} ms",
                        name,
                        f"{result.hit_rate:.1%}",
                        f"{result.hit_rate - pool:.1%}",
                        f"{pool:.1%}",
                        _ms(result.ttft_p50_s),
                        _ms(result.ttft_p90_s),
                        bar if name == "tiered+tiers" else "",
                    )
                table.add_section()
    Console(width=140).print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
