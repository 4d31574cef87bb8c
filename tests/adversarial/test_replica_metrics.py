"""A replica's ``/metrics`` cannot freeze or stall the router (issue 18 item 3).

The review's attacks: a ``-inf`` sample raised ``OverflowError`` on every scrape and froze that
replica's stats; negative or absurd gauges were accepted; a 50 MB page cost 15 s of CPU per scrape
on the event loop. Samples are now judged one by one, pages are bounded, parsing runs in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcache.api import ReplicaStatus
from pcache.engines import parse_metrics
from pcache.testing.replica import RecordingReplica
from tests.harness.router import RouterProcess
from tests.harness.wait import eventually

pytestmark = pytest.mark.integration

VLLM = (Path(__file__).parents[1] / "fixtures" / "engine-metrics" / "vllm_metrics.txt").read_text()
RUNNING = 'vllm:num_requests_running{engine="0",model_name="llama-vllm-single"} 0.0'
WAITING = 'vllm:num_requests_waiting{engine="0",model_name="llama-vllm-single"} 0.0'
KV = 'vllm:kv_cache_usage_perc{engine="0",model_name="llama-vllm-single"} 0.0'


@pytest.mark.parametrize("bad", ["-Inf", "+Inf", "-3", "1e300"])
def test_one_implausible_sample_costs_only_itself(bad: str) -> None:
    assert RUNNING in VLLM and WAITING in VLLM and KV in VLLM
    text = VLLM.replace(RUNNING, RUNNING.replace(" 0.0", f" {bad}")).replace(WAITING, WAITING[:-3] + "5")
    text = text.replace(KV, KV[:-3] + "0.25")
    stats = parse_metrics(text, engine="vllm")
    assert stats.running is None, "the implausible sample must be dropped"
    assert stats.waiting == 5 and stats.kv_usage == 0.25, "the rest of the scrape must still count"


@pytest.fixture(scope="module")
def huge() -> Iterator[RecordingReplica]:
    page = ("# a replica gone wrong\n" + 'x_metric{i="%d"} 1.0\n' * 1).encode()
    filler = b"".join(b'junk_total{i="%d"} 1.0\n' % i for i in range(600_000))  # ~14 MB
    with RecordingReplica(metrics=page + filler) as replica:
        yield replica


def test_an_oversized_metrics_page_is_refused_and_the_router_keeps_serving(
    huge: RecordingReplica, tmp_path: Path
) -> None:
    with (
        RouterProcess(
            replicas={"r1": huge.url},
            state_dir=tmp_path,
            scrape={"interval_s": 0.2, "max_bytes": 4 * 1024 * 1024},
        ) as router,
        router.admin() as admin,
    ):

        def r1() -> ReplicaStatus:
            return next(r for r in admin.replicas() if r.name == "r1")

        eventually(lambda: "more than 4194304 bytes" in router.stderr, timeout_s=30, what="the page refused")
        started = time.perf_counter()
        assert httpx.get(f"{router.url}/health", timeout=10).status_code == 200
        assert time.perf_counter() - started < 5
        assert r1().state == "healthy", "a bad metrics page is not a failed health check"
