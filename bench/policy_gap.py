"""How much more often the replicas hit their prefix cache under each policy than under round-robin.

    python bench/policy_gap.py [--runs 3] [--policies round_robin,tiered,...]

Runs the fixed help-desk workload (64 sessions x 3 turns, 32 long system prompts, 8 simulated
replicas with 512-block caches; ``pcache.testing.help_desk``) once per policy and run, and prints the
engine-reported token hit rate and its ratio to round-robin's. The project's bar is tiered >= 3x
round-robin; the command exits 1 if a run falls below it. The functional test only checks the order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pcache.testing.help_desk import HitRate, measure_hit_rate
from pcache.testing.sim import SimFleet

BAR = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--policies", default="round_robin,tiered")
    args = parser.parse_args()
    policies = [p for p in args.policies.split(",") if p]
    if "round_robin" not in policies:
        policies.insert(0, "round_robin")
    results: dict[str, list[HitRate]] = {policy: [] for policy in policies}
    with (
        tempfile.TemporaryDirectory() as scratch,
        SimFleet(replicas=8, num_gpu_blocks=512, extra_args=("--dev-mode",)) as sim,
    ):
        for run in range(args.runs):
            for policy in policies:
                results[policy].append(measure_hit_rate(sim, policy, Path(scratch) / f"{policy}-{run}"))
    baseline = [r.rate for r in results["round_robin"]]
    table = Table(title=f"engine-reported prefix-cache hit rate, {args.runs} runs, 8 replicas")
    for column in ("policy", "hit rate (mean)", "min", "max", "x round_robin (min..max)"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    below_bar = False
    for policy, runs in results.items():
        rates = [r.rate for r in runs]
        ratios = [rate / base if base else float("inf") for rate, base in zip(rates, baseline, strict=True)]
        if policy == "tiered" and min(ratios) < BAR:
            below_bar = True
        table.add_row(
            policy,
            f"{statistics.fmean(rates):.3f}",
            f"{min(rates):.3f}",
            f"{max(rates):.3f}",
            f"{min(ratios):.2f}..{max(ratios):.2f}",
        )
    Console().print(table)
    if below_bar:
        print(f"tiered fell below {BAR}x round-robin in at least one run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
