"""Trace replay: streaming reader, trace fingerprints, the simulated fleet, results and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcache.policy import POLICY_NAMES
from pcache.replay import (
    ScaleEvent,
    ServiceModel,
    SimulatedFleet,
    TraceError,
    TraceFingerprinter,
    TraceReader,
    TraceRecord,
    run_replay,
)
from pcache.replay.simfleet import SimulatedReplica
from pcache_cli.main import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
MOONCAKE = FIXTURES / "mooncake_head800.jsonl"  # real: every request starts with block 0
GSP = FIXTURES / "gsp_zipf1_head300.jsonl"
HUGE_CACHE = ServiceModel(cache_tokens=10**9)


def line(ts: int, ids: list[int], inputs: int | None = None) -> str:
    return json.dumps(
        {"timestamp": ts, "input_length": inputs or 512 * len(ids), "output_length": 10, "hash_ids": ids}
    )


def record(ids: list[int], inputs: int | None = None) -> TraceRecord:
    return TraceRecord(1, 0.0, inputs or 512 * len(ids), 10, tuple(ids))


@pytest.fixture
def bad_trace(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    rows = [
        line(0, [1, 2]),
        "{not json",
        line(5, [1, 3]),
        '{"timestamp": 9, "hash_ids": [1]}',
        "",
        line(9, [4]),
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_reader_skips_bad_lines_and_reports_the_first_line_number(bad_trace: Path) -> None:
    reader = TraceReader(bad_trace)
    records = list(reader)
    assert [r.hash_ids for r in records] == [(1, 2), (1, 3), (4,)]
    assert reader.bad_lines == 2
    assert reader.first_bad is not None and reader.first_bad.line == 2
    assert "not valid JSON" in reader.first_bad.problem


def test_strict_reader_stops_at_the_bad_line(bad_trace: Path) -> None:
    with pytest.raises(TraceError, match="line 2: not valid JSON"):
        list(TraceReader(bad_trace, strict=True))


def test_reader_streams_without_reading_ahead(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(line(0, [1]) + "\n" + "garbage\n" * 3)
    first = next(iter(TraceReader(path, strict=True)))  # the bad lines after it are not read yet
    assert first.hash_ids == (1,)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "not a JSON object"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 1}', "missing field(s): hash_ids"),
        ('{"timestamp": -1, "input_length": 5, "output_length": 1, "hash_ids": [1]}', "timestamp"),
        ('{"timestamp": 0, "input_length": "5", "output_length": 1, "hash_ids": [1]}', "input_length"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": []}', "hash_ids"),
    ],
)
def test_reader_names_what_is_wrong_with_a_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(TraceError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        list(TraceReader(path, strict=True))


def test_trace_blocks_are_chained_so_shared_ids_share_leading_blocks() -> None:
    fingerprinter = TraceFingerprinter()
    a, _ = fingerprinter.fingerprint(record([0, 1, 2]))
    b, _ = fingerprinter.fingerprint(record([0, 1, 3]))
    c, _ = fingerprinter.fingerprint(record([5, 1, 2]))
    assert a.blocks[:2] == b.blocks[:2] and a.blocks[2] != b.blocks[2]
    assert all(x != y for x, y in zip(a.blocks, c.blocks, strict=True))
    assert a.block_tokens == 512


def test_a_conversation_keeps_its_session_past_a_prefix_shared_by_everyone() -> None:
    fingerprinter = TraceFingerprinter()
    for i in range(5):  # many conversations start with block 0
        fingerprinter.fingerprint(record([0, 100 + i, 200 + i]))
    turn1, _ = fingerprinter.fingerprint(record([0, 7, 8, 9], inputs=1800))  # last block partial
    turn2, _ = fingerprinter.fingerprint(record([0, 7, 8, 10, 11], inputs=2400))  # 9 became full 10
    turn3, _ = fingerprinter.fingerprint(record([0, 7, 8, 10, 12], inputs=2200))  # another partial
    other, _ = fingerprinter.fingerprint(record([0, 70, 80]))
    assert turn1.session == turn2.session == turn3.session
    assert other.session != turn1.session


def test_many_different_final_blocks_after_a_prefix_make_each_prompt_its_own_session() -> None:
    fingerprinter = TraceFingerprinter(partial_continuations=4)
    sessions = [
        fingerprinter.fingerprint(record([1, 2, 3, 1000 + q], inputs=1600))[0].session for q in range(8)
    ]
    assert len(set(sessions[:3])) == 1  # the group's shared instructions, until they are known shared
    assert len(set(sessions[4:])) == 4  # then every question is a session of its own


def test_simulated_replica_prefills_uncached_tokens_and_queues_in_order() -> None:
    model = ServiceModel(prefill_tokens_per_s=10_000, fixed_s=0.01, decode_s_per_token=0.1, block_tokens=512)
    replica = SimulatedReplica("r1", model)
    first = replica.serve(0.0, (1, 2), 1024, output_tokens=10)
    assert first.cached_tokens == 0
    assert first.ttft_s == pytest.approx(0.01 + 1024 / 10_000)
    second = replica.serve(0.0, (1, 2, 3), 1500, output_tokens=10)  # queued behind the first
    assert second.cached_tokens == 1024
    assert second.ttft_s == pytest.approx(first.ttft_s + 0.01 + (1500 - 1024) / 10_000)
    assert replica.load(0.0) == 2
    assert replica.pending_tokens(0.0) > 0
    assert replica.load(first.finish_s) == 1
    assert replica.load(second.finish_s) == 0


def test_simulated_cache_evicts_least_recently_used_blocks() -> None:
    replica = SimulatedReplica("r1", ServiceModel(cache_tokens=3 * 512, block_tokens=512))
    replica.serve(0.0, (1, 2), 1024, 1)
    replica.serve(0.0, (3, 4), 1024, 1)  # capacity 3 blocks: block 1 goes
    assert replica.cached_prefix((1, 2)) == 0
    assert replica.cached_prefix((3, 4)) == 2


def test_simulated_fleet_scales_out_with_empty_replicas_and_in_from_the_newest() -> None:
    fleet = SimulatedFleet(2)
    assert fleet.add() == "r3"
    assert fleet.remove() == "r3"
    assert [r.name for r in fleet.view(0.0).replicas] == ["r1", "r2"]


def test_scale_event_specs() -> None:
    assert ScaleEvent.parse("50%:+1").request_index(800) == 400
    assert ScaleEvent.parse("300:-1").request_index(800) == 300
    assert str(ScaleEvent.parse(" 25% : +2 ")) == "25%:+2"
    for bad in ("50%", "x:+1", "50%:0", "150%:+1"):
        with pytest.raises(ValueError):
            ScaleEvent.parse(bad)


def test_round_robin_collapses_to_about_one_nth_of_the_reuse_that_affinity_keeps() -> None:
    ceiling = run_replay(MOONCAKE, ["round_robin"], 1, model=HUGE_CACHE).results[0].hit_rate
    results = {
        r.policy: r for r in run_replay(MOONCAKE, ["round_robin", "tiered"], 4, model=HUGE_CACHE).results
    }
    assert results["round_robin"].hit_rate < 0.5 * ceiling
    assert results["tiered"].hit_rate > 1.5 * results["round_robin"].hit_rate


def test_every_policy_reports_finite_metrics_on_a_real_trace() -> None:
    report = run_replay(MOONCAKE, list(POLICY_NAMES), 8)
    assert report.requests == 800 and report.bad_lines == 0
    assert [r.policy for r in report.results] == list(POLICY_NAMES)
    for result in report.results:
        assert result.requests == 800
        assert 0.0 < result.hit_rate < 1.0
        assert 0.0 < result.ttft_p50_s <= result.ttft_p90_s <= result.ttft_p99_s
        assert 1.0 <= result.imbalance_p90 < 3.0
        assert result.timeline and result.sessions_moved is None


def test_adding_a_replica_moves_about_one_in_n_plus_one_sessions_of_a_hashing_policy() -> None:
    report = run_replay(MOONCAKE, ["session", "tiered", "round_robin"], 8, scale=ScaleEvent.parse("50%:+1"))
    moved = {r.policy: r.sessions_moved for r in report.results}
    assert report.scale_at_request == 400
    assert moved["session"] is not None and 0.02 < moved["session"] < 0.3
    assert moved["tiered"] is not None and moved["tiered"] <= 1.3 / 9
    assert moved["round_robin"] == 1.0  # not keyed at all


def test_removing_a_replica_moves_about_its_share_of_sessions_of_a_hashing_policy() -> None:
    # With a loose load bound, exactly the sessions that hashed to the removed replica move.
    unbounded = {"session": {"eps": 100.0}}
    report = run_replay(MOONCAKE, ["session"], 4, scale=ScaleEvent.parse("50%:-1"), policy_params=unbounded)
    moved = report.results[0].sessions_moved
    assert moved is not None and 0.15 < moved < 0.35  # about 1/4


runner = CliRunner()


def test_cli_prints_a_table_of_every_policy() -> None:
    result = runner.invoke(app, ["replay", str(GSP), "--replicas", "4"])
    assert result.exit_code == 0, result.output
    for name in POLICY_NAMES:
        assert name in result.stdout
    assert "HIT RATE" in result.stdout


def test_cli_json_output_and_plot() -> None:
    result = runner.invoke(app, ["replay", str(GSP), "-p", "tiered,round-robin", "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["policy"] for r in data["results"]] == ["tiered", "round_robin"]
    assert data["requests"] == 300 and all(not math.isnan(r["hit_rate"]) for r in data["results"])
    plotted = runner.invoke(app, ["replay", str(GSP), "-p", "tiered", "--plot"])
    assert plotted.exit_code == 0 and "per minute" in plotted.stdout


def test_cli_unknown_policy_lists_the_valid_ones() -> None:
    result = runner.invoke(app, ["replay", str(GSP), "-p", "tiered,fastest"])
    assert result.exit_code == 2
    assert "unknown policy fastest; valid policies: all, tiered, cache_aware" in result.stderr


def test_cli_reports_bad_lines_and_strict_stops_with_the_line_number(bad_trace: Path) -> None:
    result = runner.invoke(app, ["replay", str(bad_trace), "-p", "session", "-o", "json"])
    assert result.exit_code == 0
    assert "skipped 2 bad line(s); first at line 2" in result.stderr
    strict = runner.invoke(app, ["replay", str(bad_trace), "--strict"])
    assert strict.exit_code == 1
    assert "line 2: not valid JSON" in strict.stderr and "Traceback" not in strict.output


def test_cli_rejects_a_missing_trace_and_a_bad_scale_spec(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["replay", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.stderr
    bad_scale = runner.invoke(app, ["replay", str(GSP), "--scale-at", "half:+1"])
    assert bad_scale.exit_code == 2 and "50%:+1" in bad_scale.stderr


def test_replay_of_a_file_that_is_not_jsonl_fails_before_printing_any_table(tmp_path: Path) -> None:
    from pcache_cli.main import app

    bad = tmp_path / "notes.txt"
    bad.write_text("hello world\nnot json\n")
    result = CliRunner().invoke(app, ["replay", str(bad)], env={"PCACHE_CONFIG": "", "NO_COLOR": "1"})
    assert result.exit_code == 1
    assert result.stdout == ""  # no table of zeros marked best
    assert "no usable requests" in result.stderr and "JSONL" in result.stderr
