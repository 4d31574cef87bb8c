"""The shared pool end to end: a simulated fleet with a pool behind a real router, read by the CLI.

``pcache status -o json`` splits each replica's hit rate by tier; the parts sum to the hit rate and
agree with the replica's own ``vllm:prompt_tokens_cached_by_source_total`` counters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from pcache.testing.http import expect_ok
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually
from pcache_cli.main import app

MANUAL = "The ACME manual, chapter {n}: every valve is checked twice before the pump starts. " * 8
SOURCE_TIER = {"device": "gpu", "host": "host", "disk": "disk", "p2p": "peer", "external_unspecified": "pool"}


def engine_counters(text: str) -> tuple[float, dict[str, float]]:
    """A replica's prefix-cache queries and cached tokens by tier, from its /metrics."""
    queries, tiers = 0.0, dict.fromkeys(SOURCE_TIER.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:prefix_cache_queries_total":
                queries += sample.value
            elif sample.name == "vllm:prompt_tokens_cached_by_source_total":
                tiers[SOURCE_TIER[sample.labels["source"]]] += sample.value
    return queries, tiers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFleet, RouterProcess, Path]]:
    home = tmp_path_factory.mktemp("tiers")
    with (
        SimFleet(replicas=3, pool_blocks=4096, pool_latency_ms=1.0) as sim,
        RouterProcess(replicas=sim.urls, policy="round_robin", state_dir=home) as router,
    ):
        yield sim, router, home


def cli(router: RouterProcess, home: Path, *args: str) -> Any:
    env = {
        "PCACHE_ROUTER": router.admin_url,
        "PCACHE_ADMIN_TOKEN": router.token or "",
        "NO_COLOR": "1",
        "PCACHE_CONFIG": "",
        "XDG_CONFIG_HOME": str(home),
        "PCACHE_OUTPUT": "",
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_status_splits_each_replicas_hit_rate_by_tier_as_its_metrics_do(
    stack: tuple[SimFleet, RouterProcess, Path],
) -> None:
    sim, router, home = stack
    # round robin sends each document's repeats to the other replicas: their hits come from the pool
    for n in range(3):
        for question in range(4):
            body = {"model": "sim-model", "max_tokens": 2, "prompt": MANUAL.format(n=n) + f"Q{question}"}
            expect_ok(httpx.post(f"{router.url}/v1/completions", json=body, timeout=30))
    engines = {name: engine_counters(sim.metrics(name)) for name in sim.urls}
    assert sum(tiers["pool"] for _, tiers in engines.values()) > 0
    assert sum(tiers["gpu"] for _, tiers in engines.values()) > 0

    def scraped_everything() -> dict[str, Any] | None:
        status: dict[str, Any] = cli(router, home, "status", "-o", "json")
        rows = {row["name"]: row for row in status["replicas"]}
        for name, (queries, tiers) in engines.items():
            split = rows[name]["hit_rate_by_tier"]
            if split is None or abs(split["pool"] - tiers["pool"] / queries) > 1e-9:
                return None
        return status

    status = eventually(scraped_everything, timeout_s=20, what="a scrape after the last request")
    for row in status["replicas"]:
        queries, tiers = engines[row["name"]]
        split = row["hit_rate_by_tier"]
        assert sum(split.values()) == pytest.approx(row["hit_rate"])
        for tier, tokens in tiers.items():
            assert split[tier] == pytest.approx(tokens / queries), (row["name"], tier)
    fleet = status["all"]["hit_rate_by_tier"]
    assert sum(fleet.values()) == pytest.approx(status["all"]["hit_rate"])
    assert fleet["pool"] > 0
    # the router's own /metrics carries the same split per replica
    exposed = {
        (sample.labels["replica"], sample.labels["tier"]): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{router.url}/metrics", timeout=5).text)
        for sample in family.samples
        if sample.name == "pcache_replica_hit_rate_by_tier"
    }
    for name, (queries, tiers) in engines.items():
        assert exposed[(name, "pool")] == pytest.approx(tiers["pool"] / queries)
        assert exposed[(name, "gpu")] == pytest.approx(tiers["gpu"] / queries)


def cli_run(router: RouterProcess, home: Path, *args: str) -> Any:
    env = {
        "PCACHE_ROUTER": router.admin_url,
        "PCACHE_ADMIN_TOKEN": router.token or "",
        "NO_COLOR": "1",
        "PCACHE_CONFIG": "",
        "XDG_CONFIG_HOME": str(home),
        "PCACHE_OUTPUT": "",
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env=env)


def test_prewarm_into_the_pool_once_serves_the_prefix_cached_on_every_replica(
    stack: tuple[SimFleet, RouterProcess, Path],
) -> None:
    sim, router, home = stack
    prefixes = [
        f"Runbook {name}: restart the service, drain the queue, page the owner. " * 6 for name in "ABC"
    ]
    file = home / "runbooks.txt"
    file.write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    result = cli_run(router, home, "prewarm", str(file), "--tier", "pool", "--verify", "-o", "json")
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["total"] == 3  # once per prefix, not once per replica
    for pair in job["results"]:
        assert pair["verified"] is True and pair["verified_on"] not in (None, pair["replica"]), pair
        assert pair["external_hit_tokens"] > 0 and pair["cached_tokens"] >= pair["external_hit_tokens"]
    # the next request of each prefix, on any replica, reports the prefix cached
    for text in prefixes:
        for name, url in sim.urls.items():
            before = engine_counters(sim.metrics(name))[1]
            body = {
                "model": "sim-model",
                "max_tokens": 2,
                "messages": [
                    {"role": "system", "content": text},
                    {"role": "user", "content": f"status of {name}?"},
                ],
            }
            response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            expect_ok(response)
            cached = response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            assert cached >= len(text) // 4 - 16, (name, cached)
            after = engine_counters(sim.metrics(name))[1]
            assert after["gpu"] + after["pool"] - before["gpu"] - before["pool"] == cached


def test_prewarm_into_the_pool_refuses_pin(stack: tuple[SimFleet, RouterProcess, Path]) -> None:
    _, router, home = stack
    file = home / "one.txt"
    file.write_text("A runbook line long enough to fill more than one routing block of text. " * 4 + "\n")
    result = cli_run(router, home, "prewarm", str(file), "--tier", "pool", "--pin")
    assert result.exit_code != 0 and "pin does not apply" in result.stderr
