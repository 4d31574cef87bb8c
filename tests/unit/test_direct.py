"""Direct mode: a StatusSnapshot straight from replicas' /metrics (real captures served at the edge)."""

from __future__ import annotations

import math
from pathlib import Path

import httpx

from pcache.api import ReplicaStatus, StatusSnapshot
from pcache.direct import DirectState, direct_snapshot, imbalance_callouts, replica_names
from pcache.engines import parse_metrics
from pcache.engines.histogram import merge_buckets, quantile
from pcache.engines.window import bucket_increase

FIXTURES = Path(__file__).parent.parent / "fixtures" / "direct"


def _text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _fleet(pages: dict[str, str | None]) -> httpx.AsyncClient:
    """Replicas by host: their /metrics text, or None for one that refuses connections."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = pages[request.url.host]
        if page is None:
            raise httpx.ConnectError("connection refused", request=request)
        assert request.url.path == "/metrics"
        return httpx.Response(200, text=page)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_two_scrapes_give_the_recent_hit_rate_and_request_rate_of_a_real_vllm() -> None:
    pages: dict[str, str | None] = {
        "a": _text("vllm_0.32_before.txt"),
        "b": _text("sglang_metrics.txt"),
        "c": None,
    }
    urls = {"r1": "http://a:8000", "r2": "http://b:30000", "r3": "http://c:8000"}
    async with _fleet(pages) as http:
        first, state = await direct_snapshot(urls, http)
        pages["a"] = _text("vllm_0.32_after.txt")
        second, _ = await direct_snapshot(urls, http, state)
    r1_first = next(r for r in first.replicas if r.name == "r1")
    assert r1_first.engine == "vllm" and r1_first.hit_rate is None  # nothing queried yet
    r1 = next(r for r in second.replicas if r.name == "r1")
    assert r1.hit_rate == 19456 / 22262
    assert r1.requests_total == 20 and r1.requests_per_s > 0
    assert r1.kv_usage == 0.0 and r1.running == 0 and r1.waiting == 0
    # The second snapshot's percentiles cover what the engine served between the two scrapes, the
    # same window as its hit rate; the first one's are since the engine started, and say so.
    before, after = (parse_metrics(_text(f"vllm_0.32_{n}.txt")) for n in ("before", "after"))
    served = bucket_increase(after.ttft_buckets or (), before.ttft_buckets or ())
    assert r1.window_s is not None and r1_first.window_s is None
    assert r1.ttft_p95 == quantile(served, 0.95) and r1.ttft_lifetime_p95 == quantile(
        after.ttft_buckets, 0.95
    )
    assert r1.block_size == 128 and r1.kv_capacity_tokens == 128 * 24


async def test_snapshot_rows_are_sorted_with_an_all_row_from_merged_buckets_and_a_down_callout() -> None:
    pages: dict[str, str | None] = {
        "a": _text("vllm_0.32_after.txt"),
        "b": _text("sglang_metrics.txt"),
        "c": None,
    }
    urls = {"r3": "http://c:8000", "r2": "http://b:30000", "r1": "http://a:8000"}
    async with _fleet(pages) as http:
        snapshot, state = await direct_snapshot(urls, http)
    assert [r.name for r in snapshot.replicas] == ["r1", "r2", "r3"]
    down = snapshot.replicas[2]
    assert down.state == "unhealthy" and down.stale and "ConnectError" in (down.last_error or "")
    assert any(c.startswith("r3: unhealthy") for c in snapshot.callouts)
    assert set(state.scrapes) == {"r1", "r2"}
    stats = [parse_metrics(_text("vllm_0.32_after.txt")), parse_metrics(_text("sglang_metrics.txt"))]
    merged = merge_buckets([s.ttft_buckets for s in stats])
    assert snapshot.all.ttft_p95 == quantile(merged, 0.95)
    assert snapshot.all.running == sum(s.running or 0 for s in stats)
    assert snapshot.all.engine == "mixed"
    assert snapshot.router.policy == "direct" and snapshot.router.drift_ratio is None
    # Like the router's, the snapshot survives JSON: buckets keep finite edges only (JSON has no +Inf).
    assert all(math.isfinite(le) for row in snapshot.replicas for le, _ in row.ttft_buckets or [])
    assert StatusSnapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


def test_callouts_name_the_replica_under_kv_pressure_and_the_overloaded_one() -> None:
    def row(name: str, kv: float, running: int) -> ReplicaStatus:
        return ReplicaStatus(
            name=name, url="", engine="vllm", state="healthy", kv_usage=kv, running=running, waiting=0
        )

    callouts = imbalance_callouts([row("r1", 0.2, 1), row("r2", 0.3, 1), row("r3", 0.92, 12)])
    assert callouts == ["r3: KV usage 92%, fleet mean 47%", "r3: load 12 (running+waiting), fleet mean 4.7"]
    assert imbalance_callouts([row("r1", 0.5, 2), row("r2", 0.55, 3)]) == []


def test_bare_urls_are_named_by_host_and_port() -> None:
    assert replica_names(["http://127.0.0.1:8101/", "gpu2=http://10.0.0.2:8000"]) == {
        "127.0.0.1:8101": "http://127.0.0.1:8101",
        "gpu2": "http://10.0.0.2:8000",
    }


def test_state_defaults_to_no_previous_scrapes() -> None:
    assert DirectState().scrapes == {}
