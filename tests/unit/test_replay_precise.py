"""``pcache replay --precise``: each cache-indexed policy also runs on the replayed fleet's own
caches (what KV events would report), beside its approximate index."""

from __future__ import annotations

from pathlib import Path

from pcache.replay import run_replay

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def test_precise_lanes_run_beside_the_approximate_ones_and_match_at_least_their_hit_rate() -> None:
    for trace in ("mooncake_head800.jsonl", "gsp_zipf1_head300.jsonl"):
        report = run_replay(FIXTURES / trace, ["tiered", "round_robin"], 4, precise=True)
        results = {r.policy: r for r in report.results}
        assert set(results) == {"tiered", "round_robin", "tiered+precise"}  # round_robin has no index
        precise, approximate = results["tiered+precise"], results["tiered"]
        assert precise.requests == approximate.requests
        assert precise.hit_rate >= approximate.hit_rate
        assert precise.ttft_p90_s is not None and approximate.ttft_p90_s is not None
        assert precise.ttft_p90_s <= approximate.ttft_p90_s * 1.0001


def test_without_precise_no_extra_lane_runs() -> None:
    report = run_replay(FIXTURES / "gsp_zipf1_head300.jsonl", ["tiered"], 4)
    assert [r.policy for r in report.results] == ["tiered"]
