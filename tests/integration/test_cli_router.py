"""Every operator command through Typer's runner against a real router and simulated fleet on loopback.

One router (4 simulated replicas, one Tier-1 prefix) serves the whole module; tests that change
operator state (drains, pins, membership) put it back before they finish.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from pcache.api import PinIn
from pcache.testing.http import expect_ok
from pcache.testing.ports import free_port
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache.testing.wait import eventually
from pcache_cli.main import app

SUPPORT = "You are the support assistant of ACME. Answer briefly, cite the manual, never guess. " * 6


class Stack:
    def __init__(self, sim: SimFleet, router: RouterProcess, home: Path) -> None:
        self.sim = sim
        self.router = router
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PCACHE_ROUTER": self.router.admin_url,
            "PCACHE_ADMIN_TOKEN": self.router.token or "",
            "NO_COLOR": "1",
            "PCACHE_CONFIG": "",
            "XDG_CONFIG_HOME": str(self.home),
            "PCACHE_OUTPUT": "",
        }
        return {**env, **extra}

    def cli(self, *args: str, **env: str) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env(**env))

    def chat(self, session: str, question: str, system: str = SUPPORT) -> httpx.Response:
        body = {
            "model": "sim-model",
            "max_tokens": 2,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        }
        response = httpx.post(
            f"{self.router.url}/v1/chat/completions", json=body, headers={"x-session-id": session}, timeout=30
        )
        expect_ok(response)
        return response


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("cli-router")
    with (
        SimFleet(replicas=4) as sim,
        RouterProcess(
            replicas=sim.urls, state_dir=home, tier1=[{"name": "support", "text": SUPPORT, "copies": 2}]
        ) as router,
    ):
        stack = Stack(sim, router, home)
        for i in range(12):
            stack.chat(f"s{i % 6}", f"question {i}")
        yield stack


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def rows(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line.split()}


# ---- status -------------------------------------------------------------------------------------


def test_status_shows_every_replica_the_all_row_and_the_router_header(stack: Stack) -> None:
    eventually(lambda: json.loads(stack.cli("status", "-o", "json").stdout)["all"]["ttft_p50"] is not None)
    result = stack.cli("status")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    header = result.stdout.splitlines()[0]
    assert f"router {stack.router.admin_url}" in header and "policy tiered" in header
    table = rows(result.stdout)
    assert [name for name in table if name in ("r1", "r2", "r3", "r4", "ALL")] == [
        "r1",
        "r2",
        "r3",
        "r4",
        "ALL",
    ]
    assert all("healthy" in table[name] for name in ("r1", "r2", "r3", "r4"))
    assert "ms /" in table["ALL"]  # fleet TTFT percentiles from merged buckets


def test_status_json_has_stable_keys_raw_numbers_and_the_sessions(stack: Stack) -> None:
    result = stack.cli("status", "-o", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert list(data) == ["all", "callouts", "replicas", "router"]
    assert [r["name"] for r in data["replicas"]] == ["r1", "r2", "r3", "r4"]
    assert all(list(r) == sorted(r) for r in data["replicas"])
    assert sum(r["sessions"] for r in data["replicas"]) == 6
    assert sum(r["requests_total"] for r in data["replicas"]) >= 12
    assert isinstance(data["router"]["uptime_s"], float)
    owners = sorted(r["name"] for r in data["replicas"] if "support" in r["tier1_owned"])
    pins = json.loads(stack.cli("pins", "-o", "json").stdout)
    assert owners == sorted(next(p for p in pins if p["name"] == "support")["owners"])
    assert len(owners) >= 2  # copies: 2, or more as its share of load grows


def test_status_watch_jsonl_prints_one_snapshot_per_refresh(stack: Stack) -> None:
    result = stack.cli("status", "--watch", "--interval", "0.1", "--count", "2", "-o", "jsonl")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["router"]["policy"] for line in lines] == ["tiered", "tiered"]


def test_unreachable_router_exits_3_with_one_clear_line(stack: Stack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["pins"], ["drain", "r1", "--yes"], ["prefixes"]):
        result = stack.cli("--router", url, *args)
        assert result.exit_code == 3, args
        line = one_line(result)
        assert line.startswith(f"error: router unreachable at {url}") and "PCACHE_ROUTER" in line
        assert result.stdout == ""


def test_wrong_or_missing_token_exits_1_with_a_token_hint(stack: Stack) -> None:
    for args in (["pin", "x", "--text", "hello"], ["undrain", "r1"]):
        result = stack.cli("--token", "not-the-token", *args)
        assert result.exit_code == 1, (args, result.stderr)
        assert "unauthorized" in one_line(result) and "PCACHE_ADMIN_TOKEN" in result.stderr
    # drain reads its blast radius first (a read needs no token), then the write is refused
    result = stack.cli("drain", "r1", "--yes", "--token", "not-the-token")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "unauthorized" in errors[0], result.stderr
    assert "sessions homed" in result.stderr and "Traceback" not in result.stderr
    result = stack.cli("replicas", "remove", "r1", "--yes", PCACHE_ADMIN_TOKEN="")
    assert result.exit_code == 1 and "unauthorized" in result.stderr


# ---- replicas -----------------------------------------------------------------------------------


def test_replicas_list_add_and_remove(stack: Stack) -> None:
    listed = stack.cli("replicas", "-o", "json")
    assert listed.exit_code == 0
    assert [r["name"] for r in json.loads(listed.stdout)] == ["r1", "r2", "r3", "r4"]
    added = stack.cli("replicas", "add", "r5", stack.sim.urls["r1"], "--group", "spare", "-o", "json")
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)["name"] == "r5" and json.loads(added.stdout)["group"] == "spare"
    try:
        duplicate = stack.cli("replicas", "add", "r5", stack.sim.urls["r2"])
        assert duplicate.exit_code == 1 and "already exists" in one_line(duplicate)
        table = rows(stack.cli("replicas").stdout)
        assert "r5" in table and "spare" not in table["r5"]  # group only in -o wide
        assert "spare" in rows(stack.cli("replicas", "-o", "wide").stdout)["r5"]
        no_yes = stack.cli("replicas", "remove", "r5")
        assert no_yes.exit_code == 2 and "pass --yes" in no_yes.stderr
    finally:
        removed = stack.cli("replicas", "remove", "r5", "--yes", "-o", "json")
    assert removed.exit_code == 0, removed.stderr
    assert json.loads(removed.stdout)["replica"] == "r5"
    assert "r5" not in rows(stack.cli("replicas").stdout)


def test_bad_replica_url_is_a_usage_error(stack: Stack) -> None:
    result = stack.cli("replicas", "add", "r6", "ftp://x")
    assert result.exit_code == 2 and "http://" in one_line(result)


def test_unknown_replica_exits_1_naming_it(stack: Stack) -> None:
    for args in (["drain", "r9", "--yes"], ["undrain", "r9"], ["replicas", "remove", "r9", "--yes"]):
        result = stack.cli(*args)
        assert result.exit_code == 1, args
        assert one_line(result).startswith("error: replica r9 not found")


# ---- drain --------------------------------------------------------------------------------------


def test_drain_dry_run_shows_the_blast_radius_and_changes_nothing(stack: Stack) -> None:
    owner = next(
        r["name"]
        for r in json.loads(stack.cli("status", "-o", "json").stdout)["replicas"]
        if "support" in r["tier1_owned"]
    )
    result = stack.cli("drain", owner, "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.stderr
    radius = json.loads(result.stdout)
    assert radius["replica"] == owner and radius["dry_run"] is True
    assert [move["prefix"] for move in radius["tier1"]] == ["support"]
    assert radius["tier1"][0]["successors"] and owner not in radius["tier1"][0]["successors"]
    table = stack.cli("drain", owner, "--dry-run")
    assert "support" in table.stdout and "sessions homed" in table.stdout
    assert "healthy" in rows(stack.cli("replicas").stdout)[owner]


def test_drain_without_yes_and_no_tty_exits_2_and_does_not_drain(stack: Stack) -> None:
    result = stack.cli("drain", "r2")
    assert result.exit_code == 2
    assert "sessions homed" in result.stderr  # the blast radius came first
    assert result.stderr.strip().splitlines()[-1] == (
        "error: refusing to drain r2 without confirmation: stdin is not a TTY; pass --yes"
    )
    assert "healthy" in rows(stack.cli("replicas").stdout)["r2"]


def test_drain_wait_until_drained_then_undrain(stack: Stack) -> None:
    try:
        result = stack.cli("drain", "r2", "--yes", "--wait", "--timeout", "10", "-o", "json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["state"] == "drained"
        assert "replica r2 drained" in result.stderr
        assert "DRAINED" in rows(stack.cli("replicas").stdout)["r2"]
    finally:
        undrained = stack.cli("undrain", "r2")
    assert undrained.exit_code == 0 and "healthy" in undrained.stdout


def test_a_failed_handover_prewarm_is_listed_and_exits_5(stack: Stack) -> None:
    """A drain whose successor refuses the prewarm still drains, but says so: exit 5, the pair named."""
    text = "You are the handover test assistant. Repeat the question, then answer it. " * 8
    with stack.router.admin() as admin:
        owner = admin.pin("handover", PinIn(text=text, copies=1)).owners[0]
    try:
        radius = json.loads(stack.cli("drain", owner, "--dry-run", "-o", "json").stdout)
        successors = next(m["successors"] for m in radius["tier1"] if m["prefix"] == "handover")
        assert successors and owner not in successors, radius
        for name in successors:
            stack.sim.set_faults(name, error_rate=1.0)
        try:
            result = stack.cli("drain", owner, "--yes", "-o", "json")
        finally:
            for name in successors:
                stack.sim.set_faults(name, error_rate=0.0)
            undrained = stack.cli("undrain", owner)
    finally:
        stack.cli("unpin", "handover")
    assert undrained.exit_code == 0, undrained.stderr
    assert result.exit_code == 5, result.stderr
    handover = json.loads(result.stdout)["handover"]
    failed = sorted(pair["replica"] for pair in handover["failed"] if pair["prefix"] == "handover")
    assert failed == sorted(successors) and handover["ok"] < handover["total"]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: drain of {owner} done, but its handover prewarm ")
    assert all(f"handover on {name}: HTTP 500" in last for name in successors), last


def test_drain_wait_times_out_with_exit_4_while_a_request_is_stuck(stack: Stack) -> None:
    for name in stack.sim.urls:
        stack.sim.set_faults(name, stall=True)
    errors: list[BaseException] = []

    def stuck_request() -> None:
        try:
            stack.chat("stuck-session", "this request stalls")
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=stuck_request)
    thread.start()
    try:

        def busy_replica() -> str | None:
            replicas = json.loads(stack.cli("replicas", "-o", "json").stdout)
            return next((r["name"] for r in replicas if r["in_flight"] > 0), None)

        busy = eventually(busy_replica)
        result = stack.cli("drain", busy, "--yes", "--wait", "--timeout", "0.5")
        assert result.exit_code == 4, result.stderr
        assert f"timed out after 0.5s waiting for {busy} to drain (1 still in flight)" in result.stderr
        assert "DRAINING" in rows(stack.cli("replicas").stdout)[busy]
    finally:
        for name in stack.sim.urls:
            stack.sim.set_faults(name, stall=False)
        thread.join(30)
        for name in ("r1", "r2", "r3", "r4"):
            stack.cli("undrain", name)
    assert not errors


def test_draining_the_last_routable_replica_requires_confirm(stack: Stack) -> None:
    try:
        for name in ("r2", "r3", "r4"):
            assert stack.cli("drain", name, "--yes").exit_code == 0
        refused = stack.cli("drain", "r1", "--yes")
        assert refused.exit_code == 1
        assert "last routable" in refused.stderr and "--confirm r1" in refused.stderr.splitlines()[-1]
        assert "healthy" in rows(stack.cli("replicas").stdout)["r1"]
        confirmed = stack.cli("drain", "r1", "--confirm", "r1", "-o", "json")
        assert confirmed.exit_code == 0, confirmed.stderr
        assert json.loads(confirmed.stdout)["last_routable"] is True
    finally:
        for name in ("r1", "r2", "r3", "r4"):
            assert stack.cli("undrain", name).exit_code == 0
    assert all("healthy" in rows(stack.cli("replicas").stdout)[n] for n in ("r1", "r2", "r3", "r4"))


# ---- pins ---------------------------------------------------------------------------------------


def test_pin_from_a_file_list_pins_and_unpin(stack: Stack, tmp_path: Path) -> None:
    prompt = tmp_path / "tools.txt"
    prompt.write_text("Tools: search(query), calculator(expression), weather(city).\n" * 8, encoding="utf-8")
    pinned = stack.cli(
        "pin", "tools", "--file", str(prompt), "--replicas", "r1,r3", "--prewarm", "-o", "json"
    )
    assert pinned.exit_code == 0, pinned.stderr
    out = json.loads(pinned.stdout)
    assert out["name"] == "tools" and out["replicas"] == ["r1", "r3"] and out["source"] == "pin"
    assert "2/2 pairs ok" in pinned.stderr
    try:
        listed = stack.cli("pins")
        assert listed.exit_code == 0
        table = rows(listed.stdout)
        assert "r1, r3" in table["tools"] and "support" in table  # the config's Tier-1 prefix too
        names = [pin["name"] for pin in json.loads(stack.cli("pins", "-o", "json").stdout)]
        assert names == sorted(names)
    finally:
        unpinned = stack.cli("unpin", "tools")
    assert unpinned.exit_code == 0 and unpinned.stdout.strip() == "unpinned tools"
    again = stack.cli("unpin", "tools")
    assert again.exit_code == 1 and one_line(again).startswith("error: pin tools not found")


def test_pin_usage_errors(stack: Stack, tmp_path: Path) -> None:
    both = stack.cli("pin", "x", "--text", "a", "--file", str(tmp_path / "a.txt"))
    assert both.exit_code == 2 and "--text or --file, not both" in one_line(both)
    unregistered = stack.cli("pin", "nosuchprefix", "--replicas", "r1")
    assert unregistered.exit_code == 1 and "not registered" in one_line(unregistered)
    missing = stack.cli("pin", "x", "--file", str(tmp_path / "absent.txt"))
    assert missing.exit_code == 1 and one_line(missing) == f"error: {tmp_path / 'absent.txt'}: no such file"
    unknown = stack.cli("pin", "x", "--text", "hello there", "--replicas", "r1,r42")
    assert unknown.exit_code == 1 and "r42" in one_line(unknown)


# ---- prewarm ------------------------------------------------------------------------------------


def _hundred_prefixes(path: Path) -> Path:
    lines = ["# 100 distinct system prompts, one per line", ""]
    lines += [
        f"You are agent {i:03d} of the fleet. Follow policy {i * 7 % 13} exactly. " * 6 for i in range(100)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prewarm_100_prefixes_then_verify_every_pair_is_cached(stack: Stack, tmp_path: Path) -> None:
    prefixes = _hundred_prefixes(tmp_path / "prefixes.txt")
    first = stack.cli("prewarm", str(prefixes), "--concurrency", "16")
    assert first.exit_code == 0, first.stderr
    assert "100/100" in first.stderr and "ETA" in first.stderr  # the progress bar, on stderr
    table = [line.split() for line in first.stdout.splitlines()[1:] if line.strip()]
    assert len(table) == 100
    assert all(row[2] == "ok" and row[1] in ("r1", "r2", "r3", "r4") for row in table)
    assert [row[0] for row in table] == sorted(row[0] for row in table)
    assert len({row[1] for row in table}) > 1  # spread over the fleet by HRW

    second = stack.cli("prewarm", str(prefixes), "--verify")
    assert second.exit_code == 0, second.stderr
    verified = [line.split() for line in second.stdout.splitlines()[1:] if line.strip()]
    # The first run registered each prefix with the replica it warmed (source "prewarm"); a registered
    # prefix may since have grown a second copy, so the plan covers every owner of every prefix.
    warmed_on = {row[0]: row[1] for row in table}
    owners: dict[str, set[str]] = {}
    for row in verified:
        owners.setdefault(row[0], set()).add(row[1])
    assert set(owners) == set(warmed_on)
    assert all(warmed_on[name] in owners[name] for name in warmed_on), (warmed_on, owners)
    assert all(row[2] == "ok" and row[4] == "cached" and int(row[3]) > 0 for row in verified)
    assert f"{len(verified)}/{len(verified)} verified cached" in second.stderr


def test_prewarm_without_pin_steers_the_next_new_session_to_a_warmed_replica(
    stack: Stack, tmp_path: Path
) -> None:
    """The router learns where a prewarm put each prefix: a new session's first request goes there."""
    texts = {
        f"steer-{i}": f"You are travel desk assistant {i}. Book trains, not planes. " * 8 for i in range(3)
    }
    path = tmp_path / "steer.jsonl"
    path.write_text("".join(json.dumps({"name": n, "text": t}) + "\n" for n, t in texts.items()))
    result = stack.cli("prewarm", str(path), "-o", "json")
    assert result.exit_code == 0, result.stderr
    warmed = {pair["prefix"]: pair["replica"] for pair in json.loads(result.stdout)["results"]}
    assert sorted(warmed) == sorted(texts)
    try:
        registered = {p["name"]: p for p in json.loads(stack.cli("pins", "-o", "json").stdout)}
        assert all(registered[name]["source"] == "prewarm" for name in texts)
        for i, (name, text) in enumerate(texts.items()):
            response = stack.chat(f"steer-new-{i}", "first question", system=text)
            assert response.headers["x-pcache-replica"] == warmed[name], (name, warmed)
            assert response.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    finally:
        for name in texts:
            stack.cli("unpin", name)


def test_prewarm_dry_run_shows_the_plan_and_sends_nothing(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    alpha, beta = "Alpha system prompt. Be exact. " * 10, "Beta system prompt. " * 15
    path.write_text(
        json.dumps({"name": "alpha", "text": alpha, "copies": 2})
        + "\n"
        + json.dumps({"name": "beta", "text": beta, "replicas": ["r4"]})
        + "\n",
        encoding="utf-8",
    )
    served_before = _served(stack)
    result = stack.cli("prewarm", str(path), "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["state"] == "planned" and all(pair["ok"] is None for pair in job["results"])
    plan = {entry["prefix"]: entry for entry in job["plan"]}
    assert len(plan["alpha"]["replicas"]) == 2 and plan["beta"]["replicas"] == ["r4"]
    table = stack.cli("prewarm", str(path), "--dry-run")
    assert rows(table.stdout)["beta"].split()[1] == "r4"
    assert "nothing sent" in table.stderr
    assert _served(stack) == served_before


def _served(stack: Stack) -> float:
    """Requests the simulated replicas have completed, from their own /metrics."""
    from pcache.engines import parse_metrics

    return sum(parse_metrics(stack.sim.metrics(name)).requests_success or 0.0 for name in stack.sim.urls)


def test_prewarm_partial_failure_exits_5_listing_the_failed_pairs(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("Failing prompt one, rather long. " * 10 + "\n" + "Failing prompt two. " * 15 + "\n")
    stack.sim.set_faults("r3", error_rate=1.0)
    try:
        result = stack.cli("prewarm", str(path), "--replicas", "r2,r3")
    finally:
        stack.sim.set_faults("r3", error_rate=0.0)
    assert result.exit_code == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 pair(s) did not warm:") and last.count(" on r3 (") == 2
    table = [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]
    assert sorted((row[1], row[2]) for row in table) == [
        ("r2", "ok"),
        ("r2", "ok"),
        ("r3", "FAILED"),
        ("r3", "FAILED"),
    ]


def test_malformed_prefixes_file_names_file_and_line(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_text('ok one\n# comment\n\n"broken \\q escape"\nok two\n', encoding="utf-8")
    result = stack.cli("prewarm", str(path))
    assert result.exit_code == 1
    assert one_line(result).startswith(f"error: {path}:4: invalid JSON string:")
    missing = stack.cli("prewarm", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1 and one_line(missing) == f"error: {tmp_path / 'nope.yaml'}: no such file"


# ---- explain, prefixes, drift -------------------------------------------------------------------


def test_route_explain_names_the_decision_and_every_candidate(stack: Stack, tmp_path: Path) -> None:
    result = stack.cli("route", "explain", "--prompt", "hello there", "--session", "s-explain", "-o", "json")
    assert result.exit_code == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["replica"] in ("r1", "r2", "r3", "r4") and decision["session"] == "s-explain"
    assert sorted(c["replica"] for c in decision["candidates"]) == ["r1", "r2", "r3", "r4"]
    for _ in range(2):  # nothing changed in between: the same replica, candidates in the same order
        again = json.loads(
            stack.cli(
                "route", "explain", "--prompt", "hello there", "--session", "s-explain", "-o", "json"
            ).stdout
        )
        assert again["replica"] == decision["replica"]
        assert [c["replica"] for c in again["candidates"]] == [c["replica"] for c in decision["candidates"]]
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "model": "sim-model",
                "messages": [{"role": "system", "content": SUPPORT}, {"role": "user", "content": "help"}],
            }
        ),
        encoding="utf-8",
    )
    table = stack.cli("route", "explain", "--file", str(request))
    assert table.exit_code == 0, table.stderr
    assert "tier-1 support" in table.stdout
    assert "→" in table.stdout and "CANDIDATE" in table.stdout
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "messages": [\n  oops\n}\n', encoding="utf-8")
    bad = stack.cli("route", "explain", "--file", str(broken))
    assert bad.exit_code == 1 and one_line(bad).startswith(f"error: {broken}:3: invalid JSON")
    neither = stack.cli("route", "explain")
    assert neither.exit_code == 2
    empty = stack.cli("route", "explain", "--prompt", "")
    assert empty.exit_code == 2 and one_line(empty) == "error: --prompt must not be empty"


def test_prefixes_heat_map_marks_the_tier1_owners(stack: Stack) -> None:
    # Its own traffic: the heat map covers the last minute only, and earlier tests may be older.
    for i in range(12):
        stack.chat(f"heat-{i % 6}", f"heat question {i}")
    result = stack.cli("prefixes", "--top", "5", "-o", "json")
    assert result.exit_code == 0, result.stderr
    heat = json.loads(result.stdout)
    support = next(row for row in heat["prefixes"] if row["name"] == "support")
    assert support["requests"] >= 12 and len(support["owners"]) >= 2
    table = rows(stack.cli("prefixes", "--top", "5").stdout)
    cells = table["support"].split("%")
    assert table["support"].count(" O") == len(support["owners"])  # every owner marked
    assert sum(1 for cell in cells if any(shade in cell for shade in "░▒▓█")) >= 1


def test_drift_reports_moves_by_cause_with_a_chart(stack: Stack) -> None:
    result = stack.cli("drift", "--since", "15m")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("last 15m: drift ratio")
    data = json.loads(stack.cli("drift", "--since", "900", "-o", "json").stdout)
    assert set(data) == {"moves_by_cause", "points", "window_s"}
    assert sum(p["session_requests"] for p in data["points"]) >= 12
    bad = stack.cli("drift", "--since", "soon")
    assert bad.exit_code == 2 and "invalid duration" in one_line(bad)


# ---- config, completion -------------------------------------------------------------------------


def test_config_check_accepts_the_router_config_and_names_bad_fields(stack: Stack, tmp_path: Path) -> None:
    good = stack.cli("config", "check", str(stack.router.config_path))
    assert good.exit_code == 0, good.stderr
    assert "ok (policy tiered, 4 replicas, 1 tier-1 prefixes" in good.stdout
    bad = tmp_path / "router.yaml"
    bad.write_text("listen: 127.0.0.1:8080\nreplicas:\n  - name: r1\n    url: nope\n", encoding="utf-8")
    result = stack.cli("config", "check", str(bad))
    assert result.exit_code == 2  # a usage error, the same code as `pcache router check-config`
    assert f"{bad}:4: replicas[0].url: must start with http:// or https://" in one_line(result)


def test_config_show_reports_the_router_from_the_environment(stack: Stack) -> None:
    result = stack.cli("config", "show")
    assert result.exit_code == 0
    table = rows(result.stdout)
    assert stack.router.admin_url in table["router"] and "env PCACHE_ROUTER" in table["router"]
    assert "<set>" in table["token"] and (stack.router.token or "?") not in result.stdout


def test_shell_completion_lists_replicas_and_pins_from_the_router(stack: Stack) -> None:
    def complete(words: str) -> list[str]:
        env = {
            "_PCACHE_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        result = CliRunner().invoke(app, [], prog_name="pcache", env={**stack.env(PCACHE_ROUTER=""), **env})
        return result.stdout.split()

    url = stack.router.admin_url
    assert complete(f"pcache --router {url} drain ") == ["r1", "r2", "r3", "r4"]
    assert complete(f"pcache --router {url} undrain r") == ["r1", "r2", "r3", "r4"]
    assert complete(f"pcache --router {url} unpin s") == ["support"]
    assert complete("pcache --router http://127.0.0.1:9 drain ") == []  # unreachable: nothing, no noise


def _on_a_tty(
    stack: Stack, args: list[str], answer: bytes, columns: int = 160, rows_: int = 50
) -> tuple[int, str]:
    """Run ``pcache ARGS`` on a pseudo-terminal, answer its prompt, return (exit code, screen text)."""
    import fcntl
    import os
    import select
    import struct
    import subprocess
    import sys
    import termios

    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows_, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "pcache_cli.main", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **stack.env()},
        close_fds=True,
    )
    os.close(terminal)
    screen = b""
    answered = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            if not answered and b"[y/n]" in screen:
                os.write(controller, answer)
                answered = True
            if process.poll() is not None and not ready:
                break
        return process.wait(10), screen.decode(errors="replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


def test_drain_on_a_tty_asks_first_and_honours_the_answer(stack: Stack) -> None:
    code, screen = _on_a_tty(stack, ["drain", "r2"], b"n\n")
    assert "sessions homed" in screen and "Drain r2?" in screen
    assert code == 1 and "drain cancelled" in screen
    assert "healthy" in rows(stack.cli("replicas").stdout)["r2"]
    try:
        code, screen = _on_a_tty(stack, ["drain", "r2"], b"y\n")
        assert code == 0, screen
        assert "DRAIN" in rows(stack.cli("replicas").stdout)["r2"]
    finally:
        assert stack.cli("undrain", "r2").exit_code == 0


def test_status_calls_out_the_replica_with_the_load_skew(stack: Stack) -> None:
    """Six slow requests sent straight to r4's engine: the router scrapes them and names r4."""
    stack.sim.set_faults("r4", slow_factor=600.0)  # about 2 s per request
    body = {"model": "sim-model", "prompt": "A request that takes its time. " * 4, "max_tokens": 1}
    threads = [
        threading.Thread(
            target=httpx.post,
            args=(f"{stack.sim.urls['r4']}/v1/completions",),
            kwargs={"json": body, "timeout": 30},
        )
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    try:

        def skew_callout() -> str | None:
            result = stack.cli("status")
            return next(
                (line for line in result.stdout.splitlines() if line.startswith("! r4: load 6 ")), None
            )

        line = eventually(skew_callout, interval_s=0.2)
        assert line.startswith("! r4: load 6 (running+waiting), fleet mean 1.5")
        data = json.loads(stack.cli("status", "-o", "json").stdout)
        assert any(callout.startswith("r4: load") for callout in data["callouts"])
    finally:
        stack.sim.set_faults("r4", slow_factor=1.0)
        for thread in threads:
            thread.join(30)


def test_status_watch_on_a_terminal_redraws_in_place_with_colour(stack: Stack) -> None:
    code, screen = _on_a_tty(stack, ["status", "--watch", "--interval", "0.1", "--count", "3"], b"")
    assert code == 0, screen
    assert screen.count("ALL") >= 1 and "r4" in screen
    assert "\x1b[" in screen  # a live display (cursor movement) on a terminal
