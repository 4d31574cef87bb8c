"""CLI commands against an admin API faked at the HTTP edge (httpx.MockTransport).

These pin down rendering, output formats and exit codes; the same commands run against a real
router and simulated fleet in tests/integration/test_cli_*.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pcache.api import (
    BlastRadius,
    CandidateOut,
    DecisionOut,
    DriftPoint,
    DriftSeries,
    PrefixCell,
    PrefixHeat,
    PrefixRow,
    ReplicaStatus,
    RouterInfo,
    StatusSnapshot,
)
from pcache.testing.ports import free_port
from pcache_cli.context import CliContext
from pcache_cli.main import app

Handler = Callable[[httpx.Request], httpx.Response]


def _replica(name: str, **fields: Any) -> ReplicaStatus:
    defaults: dict[str, Any] = {
        "url": f"http://127.0.0.1:81{name[-1]}0",
        "engine": "vllm",
        "state": "healthy",
    }
    return ReplicaStatus(name=name, **{**defaults, **fields})


BUCKETS_FAST = [(0.1, 8.0), (0.5, 10.0), (1.0, 10.0), (2.0, 10.0)]
BUCKETS_SLOW = [(0.1, 0.0), (0.5, 2.0), (1.0, 10.0), (2.0, 10.0)]


def snapshot() -> StatusSnapshot:
    replicas = [
        _replica(
            "r2",
            kv_usage=0.91,
            running=6,
            waiting=3,
            hit_rate=0.42,
            ttft_buckets=BUCKETS_SLOW,
            sessions=7,
            tier1_owned=["sys"],
            requests_per_s=3.0,
        ),
        _replica(
            "r1",
            kv_usage=0.70,
            running=1,
            waiting=0,
            hit_rate=0.8,
            ttft_buckets=BUCKETS_FAST,
            sessions=3,
            tier1_pinned=["tools"],
            requests_per_s=1.0,
        ),
        _replica("r3", state="draining", kv_usage=0.2, running=0, waiting=0),
        _replica("r4", state="unhealthy", stale=True, last_error="connection refused"),
    ]
    return StatusSnapshot(
        router=RouterInfo(
            url="http://127.0.0.1:8080",
            admin_url="http://127.0.0.1:8081",
            policy="tiered",
            version="0.1.0",
            uptime_s=10,
            requests_per_s=4.0,
            requests_total=40,
            hit_rate=0.61,
            drift_ratio=0.02,
            generated_at=1_700_000_000.0,
        ),
        replicas=replicas,
        all=ReplicaStatus(name="ALL", url="", engine="vllm", state="healthy", running=7, waiting=3),
        callouts=["r2: KV usage 91%, fleet mean 60%"],
    )


class FakeRouter:
    """Answers admin API paths from a table and records every request it saw."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(
                404, json={"error": {"message": f"no route {request.url.path}", "type": "not_found"}}
            )
        if callable(answer):
            response: httpx.Response = answer(request)
            return response
        if isinstance(answer, httpx.Response):
            return answer
        payload = (
            [a.model_dump(mode="json", by_alias=True) for a in answer]
            if isinstance(answer, list)
            else (answer.model_dump(mode="json", by_alias=True))
        )
        return httpx.Response(200, json=payload)


def run(router: FakeRouter | None, *args: str, env: dict[str, str] | None = None) -> Any:
    transport = httpx.MockTransport(router) if router else None
    env = {"PCACHE_CONFIG": "", "NO_COLOR": "1", **(env or {})}
    return CliRunner().invoke(app, list(args), obj=CliContext(transport=transport), env=env)


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("PCACHE_ROUTER", "PCACHE_ADMIN_TOKEN", "PCACHE_OUTPUT", "PCACHE_CONFIG", "PCACHE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def test_status_table_has_every_replica_sorted_an_all_row_and_the_callout() -> None:
    result = run(FakeRouter({("GET", "/api/v1/status"): snapshot()}), "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = [
        line.split()[0]
        for line in lines
        if line.split() and line.split()[0] in ("r1", "r2", "r3", "r4", "ALL")
    ]
    assert names == ["r1", "r2", "r3", "r4", "ALL"]
    assert "policy tiered" in lines[0] and "hit 61.0%" in lines[0] and "drift 2.0%" in lines[0]
    row = {line.split()[0]: line for line in lines if line.split()}
    assert "DRAINING" in row["r3"] and "UNHEALTHY STALE" in row["r4"]
    assert "91%" in row["r2"] and "6/3" in row["r2"]
    assert "1 own" in row["r2"] and "pin" not in row["r2"]  # no "0 pin" noise
    assert "1 pin" in row["r1"] and "own" not in row["r1"]
    assert "! r2: KV usage 91%, fleet mean 60%" in result.stdout
    assert result.stderr == ""


def test_status_fleet_ttft_comes_from_merged_buckets_not_averaged_percentiles() -> None:
    result = run(FakeRouter({("GET", "/api/v1/status"): snapshot()}), "status")
    all_line = next(line for line in result.stdout.splitlines() if line.startswith("ALL"))
    # 20 samples merged: 8 <= 0.1 s, 12 <= 0.5 s, 20 <= 1 s -> p50 in the (0.1, 0.5] bucket, p95 in (0.5, 1].
    from pcache.engines.histogram import merge_buckets, quantile

    merged = list(merge_buckets([BUCKETS_FAST, BUCKETS_SLOW]))
    p50, p95 = quantile(merged, 0.5), quantile(merged, 0.95)
    assert p50 is not None and p95 is not None and 0.1 < p50 <= 0.5 < p95 <= 1.0
    assert f"{p50 * 1000:.0f}ms / {p95 * 1000:.0f}ms" in all_line


def test_kv_bar_turns_yellow_at_65_and_red_at_85_percent() -> None:
    from pcache_cli.output import bar

    assert {span.style for span in bar(0.64).spans} >= {"green"}
    assert {span.style for span in bar(0.65).spans} >= {"yellow"}
    assert {span.style for span in bar(0.85).spans} >= {"red"}


def test_status_json_has_stable_sorted_keys_and_raw_numbers() -> None:
    result = run(FakeRouter({("GET", "/api/v1/status"): snapshot()}), "status", "-o", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert list(data) == sorted(data) == ["all", "callouts", "replicas", "router"]
    r2 = next(r for r in data["replicas"] if r["name"] == "r2")
    assert r2["kv_usage"] == 0.91 and r2["hit_rate"] == 0.42
    assert set(r2) == set(ReplicaStatus.model_fields)  # every key present, even when null


def test_global_output_option_and_jsonl_streams_one_document_per_line() -> None:
    result = run(FakeRouter({("GET", "/api/v1/status"): snapshot()}), "-o", "jsonl", "status")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["router"]["policy"] == "tiered"


def test_colour_is_off_without_a_tty_and_with_no_color() -> None:
    result = run(FakeRouter({("GET", "/api/v1/status"): snapshot()}), "--no-color", "status")
    assert "\x1b[" not in result.stdout


def test_unreachable_router_exits_3_with_one_line_and_a_hint() -> None:
    port = free_port()
    result = run(None, "--router", f"http://127.0.0.1:{port}", "status")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"router unreachable at http://127.0.0.1:{port}" in result.stderr
    assert "PCACHE_ROUTER" in result.stderr and "Traceback" not in result.stderr


def test_a_router_that_does_not_answer_in_time_exits_4() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    result = run(FakeRouter({("GET", "/api/v1/status"): slow}), "status")
    assert result.exit_code == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "did not answer in time" in result.stderr and "--request-timeout" in result.stderr


def test_a_router_url_without_a_scheme_exits_2_with_did_you_mean() -> None:
    result = run(None, "status", "--router", "127.0.0.1:8081")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip() == (
        "error: --router '127.0.0.1:8081' is not an http(s) URL; did you mean http://127.0.0.1:8081?"
    )


def test_the_data_plane_port_is_named_as_such() -> None:
    data_plane_404 = httpx.Response(
        404,
        json={
            "error": {
                "message": "unknown path /api/v1/status",
                "type": "invalid_request_error",
                "code": "not_found",
            }
        },
    )
    result = run(FakeRouter({("GET", "/api/v1/status"): data_plane_404}), "status")
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "looks like the router's data plane" in result.stderr and "admin.listen" in result.stderr


def test_wrong_token_exits_1_with_a_token_hint() -> None:
    router = FakeRouter(
        {
            ("PUT", "/api/v1/pins/sys"): httpx.Response(
                401, json={"error": {"message": "invalid admin token", "type": "unauthorized"}}
            )
        }
    )
    result = run(router, "--token", "wrong", "pin", "sys", "--text", "You are terse.")
    assert result.exit_code == 1
    assert "invalid admin token" in result.stderr and "PCACHE_ADMIN_TOKEN" in result.stderr
    assert router.requests[0].headers["authorization"] == "Bearer wrong"


def test_unknown_replica_exits_1_naming_it() -> None:
    router = FakeRouter({})
    result = run(router, "undrain", "r9")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: replica r9 not found:")


def _radius(**fields: Any) -> BlastRadius:
    base: dict[str, Any] = {
        "replica": "r2",
        "state": "healthy",
        "in_flight": 3,
        "sessions": 7,
        "tier1": [BlastRadius.Tier1Move(prefix="sys", successors=["r1", "r3"])],
    }
    return BlastRadius(**{**base, **fields})


def test_drain_without_yes_and_without_a_tty_refuses_with_exit_2_after_the_blast_radius() -> None:
    router = FakeRouter(
        {
            ("GET", "/api/v1/replicas/r2/blast-radius"): _radius(dry_run=True),
            ("GET", "/api/v1/status"): snapshot(),
        }
    )
    result = run(router, "drain", "r2")
    assert result.exit_code == 2
    assert "sessions homed 7" in result.stderr and "r1, r3" in result.stderr
    assert "pass --yes" in result.stderr
    assert all(r.method == "GET" for r in router.requests)  # nothing written without confirmation


def test_drain_dry_run_shows_whether_the_rest_of_the_group_has_room() -> None:
    full = snapshot()
    rows = [
        r.model_copy(update={"group": "support", "kv_usage": 0.95, "waiting": 9})
        if r.name in ("r1", "r2")
        else r
        for r in full.replicas
    ]
    router = FakeRouter(
        {
            ("GET", "/api/v1/replicas/r2/blast-radius"): _radius(dry_run=True),
            ("GET", "/api/v1/status"): full.model_copy(update={"replicas": rows}),
        }
    )
    result = run(router, "drain", "r2", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "1 other routable replica(s) in group support" in result.stdout
    assert "the rest of group support is at 95% KV usage" in result.stdout
    assert "already queues 9 requests" in result.stdout


def test_drain_dry_run_prints_the_blast_radius_as_data() -> None:
    router = FakeRouter({("GET", "/api/v1/replicas/r2/blast-radius"): _radius(dry_run=True)})
    result = run(router, "drain", "r2", "--dry-run", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["tier1"] == [{"prefix": "sys", "successors": ["r1", "r3"]}]
    assert all(r.method == "GET" for r in router.requests)  # a read: no write token needed


def test_draining_the_last_routable_replica_needs_confirm_and_then_passes_force() -> None:
    def drain(request: httpx.Request) -> httpx.Response:
        dry = request.method == "GET"
        radius = _radius(last_routable=True, dry_run=dry, state="healthy" if dry else "draining")
        return httpx.Response(200, json=radius.model_dump(mode="json"))

    router = FakeRouter(
        {
            ("POST", "/api/v1/replicas/r2/drain"): drain,
            ("GET", "/api/v1/replicas/r2/blast-radius"): drain,
            ("GET", "/api/v1/status"): snapshot(),
        }
    )
    refused = run(router, "drain", "r2", "--yes")
    assert refused.exit_code == 1 and "--confirm r2" in refused.stderr
    wrong = run(router, "drain", "r2", "--yes", "--confirm", "r1")
    assert wrong.exit_code == 1 and "--confirm r2" in wrong.stderr
    router.requests.clear()
    done = run(router, "drain", "r2", "--confirm", "r2")
    assert done.exit_code == 0, done.stderr
    writes = [(r.method, dict(r.url.params)) for r in router.requests if r.method != "GET"]
    assert writes == [("POST", {"force": "true"})]


def test_route_explain_marks_the_chosen_candidate_and_exclusions() -> None:
    decision = DecisionOut(
        policy="tiered",
        replica="r1",
        reason="session home",
        session="s1",
        session_source="header",
        candidates=[
            CandidateOut(replica="r1", score=0.9, load=1),
            CandidateOut(replica="r2", score=0.5, load=9, excluded="over load bound"),
        ],
    )
    router = FakeRouter({("POST", "/api/v1/route/explain"): decision})
    result = run(router, "route", "explain", "--prompt", "hello", "--session", "s1")
    assert result.exit_code == 0
    assert "reason session home" in result.stdout
    assert "→  1  r1" in result.stdout and "over load bound" in result.stdout
    sent = json.loads(router.requests[0].content)
    assert sent == {
        "body": {"messages": [{"role": "user", "content": "hello"}]},
        "headers": {},
        "session": "s1",
    }


def test_prefixes_heat_map_shades_cells_and_marks_owner_and_pin() -> None:
    heat = PrefixHeat(
        window_s=900,
        replicas=["r2", "r1"],
        prefixes=[
            PrefixRow(
                key="ab" * 8,
                name="sys",
                kind="pinned",
                requests=10,
                sessions=4,
                owners=["r1"],
                by_replica={
                    "r1": PrefixCell(requests=9, share=0.9, owner=True, pinned=True),
                    "r2": PrefixCell(requests=1, share=0.1),
                },
            ),
        ],
    )
    result = run(FakeRouter({("GET", "/api/v1/prefixes"): heat}), "prefixes", "--top", "5")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()[0:2]
    assert header.index("r1") < header.index("r2")
    assert "█" in row and "OP" in row and "90%" in row and "10%" in row
    # The HIT column is the router's prediction, and says so (the engine's measurement is elsewhere).
    assert "PRED HIT" in header and "router's predicted cache hit rate" in result.stdout


def test_drift_shows_moves_by_cause_and_a_chart() -> None:
    points = [
        DriftPoint(
            t=1000.0 + 60 * i,
            requests=10,
            session_requests=10,
            moves=i % 2,
            drift_ratio=(i % 2) / 10,
            hit_rate=0.5,
        )
        for i in range(6)
    ]
    series = DriftSeries(window_s=60, points=points, moves_by_cause={"overload": 2, "drain": 1})
    router = FakeRouter({("GET", "/api/v1/drift"): series})
    result = run(router, "drift", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert "drift ratio 5.00%" in result.stdout and "(3 home moves / 60 session requests)" in result.stdout
    causes = [
        line.split()[0]
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["overload"], ["drain"])
    ]
    assert causes == ["overload", "drain"]
    assert "minutes ago" in result.stdout
    assert router.requests[0].url.params["since"] == "3600.0"


def test_drift_rejects_a_bad_duration_as_usage() -> None:
    result = run(FakeRouter({}), "drift", "--since", "15 minutes")
    assert result.exit_code == 2 and "invalid duration" in result.stderr


def test_config_show_reports_each_source(tmp_path: Any) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(
        "router: http://10.0.0.1:9000\ntimeout: 2.5\nprometheus: http://127.0.0.1:9090\n", encoding="utf-8"
    )
    result = run(
        None,
        "--token",
        "s3cret",
        "config",
        "show",
        "-o",
        "json",
        env={"PCACHE_CONFIG": str(config), "PCACHE_OUTPUT": "wide"},
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["key"]: row for row in data["settings"]}
    assert rows["router"] == {"key": "router", "value": "http://10.0.0.1:9000", "source": f"file {config}"}
    assert rows["token"] == {"key": "token", "value": "<set>", "source": "flag"}
    assert rows["output"]["source"] == "env PCACHE_OUTPUT" and rows["output"]["value"] == "wide"
    assert rows["no_color"]["source"] == "env NO_COLOR"
    assert rows["timeout"]["value"] == 2.5
    assert "s3cret" not in result.stdout
    assert rows["prometheus"] == {
        "key": "prometheus",
        "value": "http://127.0.0.1:9090",
        "source": f"file {config}",
    }


def test_prometheus_url_from_the_environment_beats_the_config_file(tmp_path: Any) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text("prometheus: http://127.0.0.1:9090\n", encoding="utf-8")
    env = {"PCACHE_CONFIG": str(config), "PCACHE_PROMETHEUS": "http://127.0.0.1:9999"}
    result = run(None, "config", "show", "-o", "json", env=env)
    assert result.exit_code == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)["settings"]}
    assert rows["prometheus"]["value"] == "http://127.0.0.1:9999"
    assert rows["prometheus"]["source"] == "env PCACHE_PROMETHEUS"


def test_broken_cli_config_file_is_a_usage_error_naming_the_line(tmp_path: Any) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text("router: [oops\n", encoding="utf-8")
    result = run(None, "config", "show", env={"PCACHE_CONFIG": str(config)})
    assert result.exit_code == 2
    assert f"{config}:" in result.stderr and "invalid YAML" in result.stderr


def test_json_output_stays_strict_json_for_non_finite_numbers() -> None:
    from pcache_cli.output import jsonable

    row = _replica("r1", ttft_buckets=[(0.5, 3.0), (float("inf"), 4.0)], ttft_p50=float("nan"))
    data = jsonable(row)
    assert data["ttft_buckets"] == [[0.5, 3.0], ["+Inf", 4.0]] and data["ttft_p50"] == "NaN"
    json.dumps(data, allow_nan=False)


def test_prewarm_progress_counts_each_finished_pair_once(tmp_path: Path) -> None:
    """``done`` already counts the failed pairs: the bar reads 3/3, never 6/3."""
    from pcache.api import PrewarmJob, PrewarmPair

    path = tmp_path / "p.txt"
    path.write_text("A prompt long enough to be a prefix. " * 5 + "\n", encoding="utf-8")
    results = [PrewarmPair(prefix="p", replica=f"r{i}", ok=False, error="HTTP 400") for i in range(3)]
    job = PrewarmJob(id="pw-1", state="failed", total=3, done=3, failed=3, created_at=0.0, results=results)
    router = FakeRouter({("POST", "/api/v1/prewarm"): job, ("GET", "/api/v1/prewarm/pw-1"): job})
    result = run(router, "prewarm", str(path))
    assert result.exit_code == 1
    assert "3/3" in result.stderr and "6/3" not in result.stderr
