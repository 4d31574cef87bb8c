"""``-o yaml``, ``-o custom-columns=...`` and ``--no-headers`` on the listing commands, through the
one shared output module, against an admin API faked at the HTTP edge."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pcache.api import PinOut
from pcache_cli.output import Column, OutputFormat, column_value, parse_output, render_columns
from tests.unit.test_cli_commands import FakeRouter, run, snapshot


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("PCACHE_ROUTER", "PCACHE_ADMIN_TOKEN", "PCACHE_OUTPUT", "PCACHE_CONFIG", "PCACHE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def _status_router() -> FakeRouter:
    return FakeRouter({("GET", "/api/v1/status"): snapshot()})


def test_yaml_is_the_json_document_as_yaml() -> None:
    result = run(_status_router(), "status", "-o", "yaml")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["router"]["policy"] == "tiered"
    assert sorted(r["name"] for r in data["replicas"]) == ["r1", "r2", "r3", "r4"]


def test_custom_columns_print_one_aligned_line_per_replica_with_none_for_missing() -> None:
    spec = "custom-columns=NAME:.name,KV:.kv_usage,OWNED:.tier1_owned[0],NOPE:.no.such"
    result = run(_status_router(), "status", "-o", spec)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KV", "OWNED", "NOPE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["r1", "r2", "r3", "r4", "ALL"]
    assert rows["r2"] == ["r2", "0.91", "sys", "<none>"]
    assert rows["r1"][2] == "<none>"  # r1 owns nothing: index 0 is missing
    assert lines[0].index("KV") == lines[1].index("0.7")  # columns aligned under their header


def test_no_headers_drops_the_header_row_of_tables_and_columns_anywhere_on_the_line() -> None:
    columns = run(_status_router(), "status", "-o", "custom-columns=NAME:.name", "--no-headers")
    assert columns.exit_code == 0, columns.output
    assert columns.stdout.split() == ["r1", "r2", "r3", "r4", "ALL"]
    table = run(_status_router(), "--no-headers", "status")
    assert table.exit_code == 0, table.output
    first = table.stdout.splitlines()[0].split()
    assert first[0] == "r1" and "NAME" not in table.stdout and "policy" not in table.stdout


def test_a_listing_command_speaks_every_format() -> None:
    pins = [PinOut(name="sys", source="pin", owners=["r1", "r2"], copies=2, tokens=100, text_head="You are")]
    router = FakeRouter({("GET", "/api/v1/pins"): pins})
    as_yaml = yaml.safe_load(run(router, "pins", "-o", "yaml").stdout)
    assert as_yaml[0]["name"] == "sys" and as_yaml[0]["owners"] == ["r1", "r2"]
    cols = run(router, "pins", "-o", "custom-columns=PIN:.name,OWNERS:.owners")
    assert cols.exit_code == 0, cols.output
    assert cols.stdout.splitlines()[1].split() == ["sys", '["r1","r2"]']


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("xml", "unknown output format"),
        ("custom-columns=", "needs NAME:PATH"),
        ("custom-columns=NAME", "is not NAME:PATH"),
        ("custom-columns=N:.a..b", "bad path"),
        ("json=x", "takes no"),
    ],
)
def test_bad_output_specs_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_output(text)
    result = run(_status_router(), "status", "-o", text)
    assert result.exit_code == 2 and "--output" in result.output


def test_paths_accept_kubectl_braces_and_list_indexes() -> None:
    spec = parse_output("custom-columns=A:{.a.b},B:c[1]")
    assert spec.format is OutputFormat.CUSTOM_COLUMNS
    assert spec.columns == (Column("A", ("a", "b")), Column("B", ("c", 1)))
    item = {"a": {"b": True}, "c": [1, {"x": 2}]}
    assert column_value(item, ("a", "b")) == "true"
    assert column_value(item, ("c", 1)) == '{"x":2}'
    assert render_columns([], spec.columns, headers=False) == ""


# ---- unreachable replicas -----------------------------------------------------------------------


def test_replicas_add_of_a_url_that_does_not_answer_is_kept_with_a_one_line_warning() -> None:
    from tests.unit.test_cli_commands import _replica

    added = _replica("r5", url="http://127.0.0.1:9", state="unhealthy", last_error="connection refused")
    router = FakeRouter({("POST", "/api/v1/replicas"): added})
    result = run(router, "replicas", "add", "r5", "http://127.0.0.1:9", "--token", "T")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "UNHEALTHY: connection refused" in warning[0]
    assert "pcache replicas remove r5" in warning[0]
    healthy = FakeRouter({("POST", "/api/v1/replicas"): _replica("r5")})
    assert "warning" not in run(healthy, "replicas", "add", "r5", "http://127.0.0.1:8150").stderr


# ---- route explain ------------------------------------------------------------------------------


def test_route_explain_scores_carry_units_and_a_tie_is_named_with_its_tie_breaker() -> None:
    from pcache.api import CandidateOut, DecisionOut

    decision = DecisionOut(
        policy="tiered",
        replica="r2",
        reason="prefix owner",
        candidates=[
            CandidateOut(replica="r2", score=-1200.0, load=1),
            CandidateOut(replica="r1", score=-1200.0, load=1),
            CandidateOut(replica="r3", score=-40.0, load=9, excluded="over load bound"),
        ],
    )
    router = FakeRouter({("POST", "/api/v1/route/explain"): decision})
    outputs = [run(router, "route", "explain", "--prompt", "hi", "--session", "s1").stdout for _ in range(3)]
    assert outputs[0] == outputs[1] == outputs[2]  # rendering adds no order of its own
    text = outputs[0]
    assert "PREFILL COST" in text and "IN-FLIGHT" in text
    rows = {
        line.split()[2 if line.startswith("→") else 1]: line for line in text.splitlines() if " req" in line
    }
    assert "1,200 tok" in rows["r2"] and "1 req" in rows["r2"] and rows["r2"].split()[:2] == ["→", "1"]
    assert "40 tok" in rows["r3"] and "over load bound" in rows["r3"]
    tie = next(line for line in text.splitlines() if line.startswith("tie "))
    assert "r2, r1 at 1,200 tok" in tie and "HRW rank" in tie


def test_each_policy_names_its_score_unit() -> None:
    from pcache.policy import POLICY_NAMES
    from pcache_cli.route import score_unit

    headers = {name: score_unit(name).header for name in POLICY_NAMES}
    assert headers["tiered"] == "PREFILL COST" and headers["prefix_hash"] == "HRW SCORE"
    assert score_unit("least_load").show(-3.0) == "3 req" and score_unit("tiered").show(0.0) == "0 tok"


# ---- drift chart --------------------------------------------------------------------------------


def test_drift_ticks_are_round_percentages() -> None:
    from pcache_cli.drift import nice_ticks

    assert nice_ticks(2.41) == [0.0, 1.0, 2.0, 3.0]
    assert nice_ticks(61.0) == [0.0, 20.0, 40.0, 60.0, 80.0]
    assert nice_ticks(0.0) == [0.0, 1.0]


def test_drift_chart_skips_windows_before_traffic_and_keeps_its_legend_off_the_plot() -> None:
    from pcache.api import DriftPoint, DriftSeries

    idle = [
        DriftPoint(
            t=1000.0 + 60 * i, requests=0, session_requests=0, moves=0, drift_ratio=None, hit_rate=None
        )
        for i in range(10)
    ]
    busy = [
        DriftPoint(
            t=1600.0 + 60 * i, requests=10, session_requests=10, moves=1, drift_ratio=0.1, hit_rate=0.6
        )
        for i in range(5)
    ]
    series = DriftSeries(window_s=60, points=idle + busy, moves_by_cause={"overload": 3, "drain": 1})
    result = run(FakeRouter({("GET", "/api/v1/drift"): series}), "drift", "--since", "15m")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    legend = [
        i
        for i, line in enumerate(lines)
        if "drift ratio" in line and "fleet hit rate" in line and "━━" in line
    ]
    assert len(legend) == 1 and all(
        "━━" not in line for line in lines[: legend[0]]
    )  # below, not on, the plot
    y_labels = [line.split("┤")[0].strip() for line in lines if "┤" in line]
    assert y_labels == ["60%", "40%", "20%", "0%"]  # round ticks, not -0.0241
    assert "-0.0" not in result.stdout
    zero_row = next(line for line in lines if line.strip().startswith("0%┤"))
    assert set(zero_row.split("┤")[1]) <= {" ", "│"}  # nothing drawn along 0% for the idle minutes
    causes = {
        line.split()[0]: line.split() for line in lines if line.split()[:1] in (["overload"], ["drain"])
    }
    assert causes["overload"][1:] == ["3", "75%"] and causes["drain"][1:] == ["1", "25%"]
