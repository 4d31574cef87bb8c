"""Routing quality: every policy over the three real traces at 4, 8 and 16 replicas, one table.

    .venv/bin/python bench/routing.py                      # the full matrix (about a minute)
    .venv/bin/python bench/routing.py --replicas 8 --traces mooncake
    .venv/bin/python bench/routing.py --param tiered.eps=0.5 --json out.json

Each cell is ``pcache replay`` (the router's own policy code over a simulated fleet with finite LRU
caches and prefill queues, defaults of an 8B model on one H100), with a +1 scale event half-way
through so the table also shows what a scale-out moves. Columns: token-weighted hit rate, TTFT
p50/p90/p99, p90 of the per-minute load imbalance, and the fraction of sessions and prefix keys
the scale event moved. The last column checks the issue's bar for ``tiered`` (best or within 2% TTFT
p90, hit rate within 3 points of the best, imbalance <= 1.3, sessions moved <= 1.3/(N+1)).
Traces come from ``--data`` (default: ``../shared/data/traces`` next to the repository, or
``/work/shared/data/traces``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pcache.policy import POLICY_NAMES
from pcache.replay import PolicyResult, ScaleEvent, run_replay

ROOT = Path(__file__).resolve().parents[1]

TRACES = {
    "mooncake": "mooncake_conversation_trace.jsonl",
    "gsp_default": "synthetic_sglang_gsp_default.jsonl",
    "gsp_zipf1": "synthetic_sglang_gsp_zipf1.jsonl",
}
DATA_CANDIDATES = (ROOT.parent / "shared" / "data" / "traces", Path("/work/shared/data/traces"))


def _data_dir(given: str | None) -> Path:
    candidates = (Path(given),) if given else DATA_CANDIDATES
    for candidate in candidates:
        if all((candidate / name).is_file() for name in TRACES.values()):
            return candidate
    where = " or ".join(str(c) for c in candidates)
    sys.exit(f"error: traces not found in {where} (need {', '.join(TRACES.values())}); pass --data DIR")


def _params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        policy, _, name = key.partition(".")
        if not name or not value:
            sys.exit(f"error: --param {pair!r} is not like tiered.eps=0.5")
        params.setdefault(policy, {})[name] = json.loads(value)
    return params


def _bar(tiered: PolicyResult, results: list[PolicyResult], replicas: int) -> str:
    best_p90 = min(r.ttft_p90_s for r in results)
    best_hit = max(r.hit_rate for r in results)
    misses = []
    if tiered.ttft_p90_s > best_p90 * 1.02:
        misses.append("ttft")
    if tiered.hit_rate < best_hit - 0.03:
        misses.append("hit")
    if not tiered.imbalance_p90 <= 1.3:
        misses.append("imbalance")
    if tiered.sessions_moved is not None and tiered.sessions_moved > 1.3 / (replicas + 1):
        misses.append("moved")
    return "ok" if not misses else "MISS " + ",".join(misses)


def _fmt_s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}" if value < 10 else f"{value:.0f}s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="directory with the trace files")
    parser.add_argument("--traces", default=",".join(TRACES), help="comma-separated: " + ", ".join(TRACES))
    parser.add_argument("--replicas", default="4,8,16", help="comma-separated replica counts")
    parser.add_argument("--policies", default="all", help="'all' or comma-separated policy names")
    parser.add_argument("--scale-at", default="50%:+1", help="scale event ('' for none)")
    parser.add_argument("--param", action="append", default=[], help="policy.param=JSON, e.g. tiered.eps=0.5")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    data = _data_dir(args.data)
    traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    unknown = [t for t in traces if t not in TRACES]
    if unknown:
        sys.exit(f"error: unknown trace(s) {', '.join(unknown)}; valid: {', '.join(TRACES)}")
    policies = list(POLICY_NAMES) if args.policies == "all" else args.policies.split(",")
    scale = ScaleEvent.parse(args.scale_at) if args.scale_at else None
    params = _params(args.param)

    moved_by = f"scale {scale}" if scale is not None else "no scale event"
    table = Table(title=f"pcache routing benchmark (TTFT in ms; moved: {moved_by})", title_justify="left")
    for column in (
        "trace",
        "N",
        "policy",
        "hit",
        "p50",
        "p90",
        "p99",
        "imb p90",
        "sess mv",
        "pfx mv",
        "tiered bar",
    ):
        table.add_column(column, justify="left" if column in ("trace", "policy", "tiered bar") else "right")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for trace in traces:
        for replicas in (int(n) for n in args.replicas.split(",")):
            report = run_replay(data / TRACES[trace], policies, replicas, scale=scale, policy_params=params)
            results = report.results
            best_p90 = min(r.ttft_p90_s for r in results)
            best_hit = max(r.hit_rate for r in results)
            tiered = next((r for r in results if r.policy == "tiered"), None)
            bar = _bar(tiered, results, replicas) if tiered is not None else "-"
            for i, r in enumerate(results):
                table.add_row(
                    trace if i == 0 else "",
                    str(replicas) if i == 0 else "",
                    r.policy,
                    f"{r.hit_rate:.1%}" + ("*" if r.hit_rate == best_hit else " "),
                    _fmt_s(r.ttft_p50_s),
                    _fmt_s(r.ttft_p90_s) + ("*" if r.ttft_p90_s == best_p90 else " "),
                    _fmt_s(r.ttft_p99_s),
                    f"{r.imbalance_p90:.2f}",
                    "-" if r.sessions_moved is None else f"{r.sessions_moved:.1%}",
                    "-" if r.prefix_keys_moved is None else f"{r.prefix_keys_moved:.1%}",
                    bar if r.policy == "tiered" else "",
                    end_section=i == len(results) - 1,
                )
                rows.append({"trace": trace, "replicas": replicas, **_result_dict(r)})
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(
        f"* best in its block. {len(traces)} traces, {time.perf_counter() - started:.0f} s. "
        "Parameters: " + (json.dumps(params) if params else "defaults"),
        style="dim",
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")


def _result_dict(result: PolicyResult) -> dict[str, Any]:
    return {
        "policy": result.policy,
        "hit_rate": result.hit_rate,
        "ttft_p50_s": result.ttft_p50_s,
        "ttft_p90_s": result.ttft_p90_s,
        "ttft_p99_s": result.ttft_p99_s,
        "imbalance_p90": result.imbalance_p90,
        "sessions_moved": result.sessions_moved,
        "prefix_keys_moved": result.prefix_keys_moved,
    }


if __name__ == "__main__":
    main()
