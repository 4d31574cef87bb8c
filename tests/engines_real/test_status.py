"""``pcache status -o json`` against the engines' own ``/metrics`` over the same window.

A fresh router's first scrape is its baseline, so once it has scraped both idle engines its window
starts at the counters read here; after the traffic stops, its window holds exactly the increases
between these two readings. Hit rate and TTFT p95 are recomputed from the raw text, independently
of the router's code (PromQL's ``histogram_quantile`` over bucket increases).
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

from tests.engines_real.engine import VllmEngine, parse_metrics
from tests.engines_real.stack import Cli, EnginePair
from tests.engines_real.traffic import chat, prose
from tests.harness.router import RouterProcess
from tests.harness.wait import eventually

TTFT = "vllm:time_to_first_token_seconds_bucket"


def _status(cli: Cli) -> dict[str, Any]:
    done = cli("status", "-o", "json")
    assert done.returncode == 0, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    snapshot: dict[str, Any] = json.loads(done.stdout)
    return snapshot


def _replicas(cli: Cli) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in _status(cli)["replicas"]}


def _buckets(metrics: dict[str, float]) -> list[tuple[float, float]]:
    """The TTFT histogram's cumulative buckets, summed over label sets other than ``le``."""
    sums: dict[float, float] = {}
    for key, value in metrics.items():
        if key.startswith(TTFT + "{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            sums[float(le)] = sums.get(float(le), 0.0) + value
    return sorted(sums.items())


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile: linear interpolation inside the bucket holding the rank."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below) if count > below else le
        lower, below = le, count
    return lower


def _expected(before: dict[str, float], after: dict[str, float]) -> tuple[float, float | None]:
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    increase = [
        (le, now - then) for (le, now), (_, then) in zip(_buckets(after), _buckets(before), strict=True)
    ]
    return hits / queries, histogram_quantile(0.95, increase)


def test_hit_rate_and_ttft_p95_per_replica_equal_the_engines_metrics_over_the_same_window(
    router: RouterProcess, fleet: EnginePair, pcache_cli: Cli
) -> None:
    eventually(
        lambda: all(r["scrape_age_s"] is not None for r in _replicas(pcache_cli).values()),
        timeout_s=30,
        what="the router's first scrape of both engines",
    )
    before = {engine.name: engine.metrics() for engine in fleet.all}
    served: set[str] = set()
    for n in range(6):
        messages = [
            {"role": "system", "content": prose(f"status-{n}", 1500)},
            {"role": "user", "content": "q"},
        ]
        for _ in range(2):
            served.add(chat(router.url, messages, session=f"status-{n}").replica)
    assert served == {"e1", "e2"}, f"traffic reached only {served}"
    after = {engine.name: engine.metrics() for engine in fleet.all}
    expected = {name: _expected(before[name], after[name]) for name in after}

    def agrees() -> dict[str, dict[str, Any]] | None:
        rows = _replicas(pcache_cli)
        for name, (hit_rate, ttft_p95) in expected.items():
            row = rows[name]
            if row["hit_rate"] is None or abs(row["hit_rate"] - hit_rate) > 1e-9:
                return None
            if ttft_p95 is None or row["ttft_p95"] is None or not math.isclose(row["ttft_p95"], ttft_p95):
                return None
        return rows

    rows = eventually(agrees, timeout_s=30, what=f"status to show {expected}")
    assert rows is not None
    assert all(0 < rows[name]["hit_rate"] < 1 for name in expected)


Gauges = tuple[float, float, float]  # running, waiting, KV usage


class GaugeSampler:
    """Reads each engine's gauges as often as it answers (one thread per engine), timestamped."""

    def __init__(self, fleet: EnginePair) -> None:
        self.samples: dict[str, list[tuple[float, Gauges]]] = {e.name: [] for e in fleet.all}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(e,), daemon=True) for e in fleet.all]

    def _run(self, engine: VllmEngine) -> None:
        while not self._stop.wait(0.02):
            m = parse_metrics(engine.metrics_text())
            gauges = (
                m["vllm:num_requests_running"],
                m["vllm:num_requests_waiting"],
                m["vllm:kv_cache_usage_perc"],
            )
            self.samples[engine.name].append((time.time(), gauges))

    def around(self, name: str, t: float, slack_s: float) -> list[Gauges]:
        """The readings within ``slack_s`` of ``t``, and the last one before and first one after it
        (on a busy machine one reading can take longer than the slack)."""
        samples = list(self.samples[name])
        before = [g for at, g in samples if at <= t][-1:]
        after = [g for at, g in samples if at > t][:1]
        return [g for at, g in samples if abs(at - t) <= slack_s] + before + after

    def __enter__(self) -> GaugeSampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def test_kv_usage_running_and_waiting_equal_the_engines_gauges_under_load(
    router: RouterProcess, fleet: EnginePair, pcache_cli: Cli
) -> None:
    """Under load, each replica's status gauges are one of its engine's own readings taken within
    one scrape interval of the router's scrape (the gauges move with every decode step, so each
    replica is matched on its own, at some moment while its engine is busy)."""
    stop = threading.Event()
    matched: set[str] = set()
    seen: list[Any] = []

    def long_generations(url: str, session: str) -> None:
        messages = [{"role": "system", "content": prose(session, 1200)}, {"role": "user", "content": "go"}]
        while not stop.is_set():
            chat(url, messages, session=session, max_tokens=400)

    def agrees(sampler: GaugeSampler) -> bool:
        snapshot = _status(pcache_cli)
        for row in snapshot["replicas"]:
            if not row["running"] or row["scrape_age_s"] is None or row["kv_usage"] is None:
                continue  # an idle engine agrees trivially: wait for load
            scraped_at = snapshot["router"]["generated_at"] - row["scrape_age_s"]
            engine = sampler.around(row["name"], scraped_at, 0.5)
            seen[:] = [(row["name"], row["running"], row["waiting"], row["kv_usage"]), engine]
            if (row["running"], row["waiting"], row["kv_usage"]) in engine:
                matched.add(row["name"])
        return matched == {"e1", "e2"}

    # Load sent to each engine directly: the gauges are the engine's, whoever sends its requests.
    workers = [
        threading.Thread(target=long_generations, args=(engine.url, f"gauge-{engine.name}-{n}"))
        for engine in fleet.all
        for n in range(2)
    ]
    with GaugeSampler(fleet) as sampler:
        for worker in workers:
            worker.start()
        try:
            eventually(
                lambda: agrees(sampler), timeout_s=90, interval_s=0.2, what="status gauges equal to /metrics"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; matched {matched}; last row and engine readings: {seen}") from None
        finally:
            stop.set()
            for worker in workers:
                worker.join(120)
