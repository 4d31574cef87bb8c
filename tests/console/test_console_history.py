"""History from a real Prometheus: it scrapes a real router and simulated fleet on loopback, and the
console fills its charts from range queries before going live."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from textual.widgets import Static

from pcache.client import AdminClient
from pcache.testing.ports import free_port
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually
from pcache_console.app import TopApp
from pcache_console.prometheus import load_history
from pcache_console.source import RouterSource
from tests.console.conftest import text_of, until

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.prometheus,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="no prometheus binary on PATH (Debian: apt-get install prometheus)"
    ),
]

SYSTEM = "You are the history test assistant; answer every question in exactly one sentence. " * 4


def _traffic(router: RouterProcess) -> None:
    """A few chat requests sharing a system prompt, so hit rates and drift have values."""
    for i in range(12):
        response = httpx.post(
            f"{router.url}/v1/chat/completions",
            json={
                "model": "sim-model",
                "max_tokens": 4,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"q{i}"}],
            },
            headers={"x-session-id": f"s{i % 4}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimFleet, RouterProcess]]:
    with (
        SimFleet(replicas=3) as sim,
        RouterProcess(replicas=sim.urls, state_dir=tmp_path_factory.mktemp("router")) as router,
    ):
        yield sim, router


@pytest.fixture(scope="module")
def prometheus(
    fleet: tuple[SimFleet, RouterProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    sim, router = fleet
    directory = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "pcache-router", "static_configs": [{"targets": [urlsplit(router.url).netloc]}]},
            {
                "job_name": "replicas",
                "static_configs": [
                    {"targets": [urlsplit(url).netloc], "labels": {"replica": name}}
                    for name, url in sim.urls.items()
                ],
            },
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={urlsplit(url).netloc}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def targets_up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited: {process.stderr.read() if process.stderr else ''}")
            try:
                targets = httpx.get(f"{url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            return len(targets) == 1 + len(sim.urls) and all(t["health"] == "up" for t in targets)

        def query(promql: str) -> list[dict[str, object]]:
            response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=2)
            return response.json()["data"]["result"]  # type: ignore[no-any-return]

        def has_history() -> bool:
            # Samples with a value (the gauge is NaN until the router has seen traffic).
            scrapes = query("count_over_time((pcache_engine_hit_rate >= 0)[1m:1s])")
            served = query("increase(vllm:prefix_cache_queries_total[1m]) > 0")
            return bool(scrapes) and float(scrapes[0]["value"][1]) >= 4 and bool(served)  # type: ignore[index]

        eventually(targets_up, timeout_s=30, interval_s=0.2, what="every Prometheus target to be up")
        _traffic(router)  # after the first scrapes, so rates over the window see it
        eventually(
            has_history,
            timeout_s=30,
            interval_s=0.2,
            what="four scrapes of the router and the replicas' traffic",
        )
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


def test_range_queries_return_fleet_and_per_replica_history(
    fleet: tuple[SimFleet, RouterProcess], prometheus: str
) -> None:
    _, router = fleet
    with router.admin() as admin:
        status = admin.status()
    backfill = load_history(prometheus, status, window_s=120, step_s=1)
    assert len(backfill.fleet) >= 3
    assert any(point.hit_rate is not None for point in backfill.fleet)
    assert set(backfill.kv_usage) == {"r1", "r2", "r3"}
    assert all(len(values) >= 3 for values in backfill.kv_usage.values())
    assert backfill.hit_rate, "the replicas that served traffic have a hit-rate history"


async def test_console_starts_with_prometheus_history_then_goes_live(
    fleet: tuple[SimFleet, RouterProcess], prometheus: str
) -> None:
    _, router = fleet
    client = AdminClient(router.admin_url, token=router.token)
    app = TopApp(
        RouterSource(client),
        refresh_s=60.0,  # one live poll: anything more in the trails came from Prometheus
        history_loader=lambda status: load_history(prometheus, status, window_s=120, step_s=1),
    )
    async with app.run_test(size=(150, 44)) as pilot:
        flash = app.query_one("#flash", Static)
        await until(pilot, lambda: "history loaded" in text_of(flash), timeout=20)
        assert app.polls == 1
        assert len(app.history.kv_usage["r1"]) >= 4
        before_live = [p for p in app.history.fleet() if p.hit_rate is not None]
        assert len(before_live) >= 3
