"""The traffic generator: seeded workload plans, and real runs against a simulated replica."""

from __future__ import annotations

import pytest

from pcache.engines import parse_metrics
from pcache.loadgen import CUT_OFF, LoadGenerator, LoadLimits, LoadSummary, TurnResult, percentile
from pcache.testing.sim import SimFleet
from pcache.workload import SystemPrompt, Workload, default_prompts, plan_session, zipf_weights

PROMPT = SystemPrompt("policy", "You are a careful assistant. Follow the rules below.\n" * 80)


def small_workload(**changes: object) -> Workload:
    settings: dict[str, object] = {
        "prompts": (PROMPT,),
        "session_rate": 50.0,
        "turns": (3, 3),
        "think_time_s": 0.0,
        "user_chars": (100, 300),
        "max_tokens": 4,
        "seed": 7,
    }
    settings.update(changes)
    return Workload(**settings)  # type: ignore[arg-type]


def test_same_seed_plans_the_same_sessions_and_another_seed_does_not() -> None:
    workload = Workload(default_prompts(), seed=3)
    assert plan_session(workload, 5) == plan_session(Workload(default_prompts(), seed=3), 5)
    assert plan_session(workload, 5) != plan_session(Workload(default_prompts(), seed=4), 5)
    plan = plan_session(workload, 5)
    assert workload.turns[0] <= len(plan.user_messages) <= workload.turns[1]
    assert len(plan.think_times_s) == len(plan.user_messages) - 1


def test_popularity_is_zipf_skewed_towards_the_first_prompt() -> None:
    weights = zipf_weights(6, 1.0)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True)
    assert weights[0] == pytest.approx(2 * weights[1])
    workload = Workload(default_prompts(), seed=1)
    picks = [plan_session(workload, index).prompt.name for index in range(600)]
    assert picks.count(default_prompts()[0].name) > picks.count(default_prompts()[-1].name) * 3


def test_built_in_prompts_are_long_shared_tier1_material() -> None:
    prompts = default_prompts()
    assert len({prompt.name for prompt in prompts}) == len(prompts) == 6
    assert {prompt.group for prompt in prompts} == {"support", "code"}
    for prompt in prompts:
        assert 1000 <= len(prompt.text) / 4 <= 3000, prompt.name  # tokens at ~4 characters each
        assert '"type": "function"' in prompt.text


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.0


def test_limits_must_end_the_run() -> None:
    with pytest.raises(ValueError, match="so the run ends"):
        LoadLimits()
    with pytest.raises(ValueError):
        LoadLimits(max_requests=0)


@pytest.mark.integration
async def test_run_stops_at_the_request_bound_and_the_summary_matches_the_replica() -> None:
    with SimFleet(replicas=1) as fleet:
        before = parse_metrics(fleet.metrics())
        # One session at a time: with concurrent sessions, how many had started when the 12th request
        # was taken depended on how fast the replica answered (7 instead of 4 on a busy machine).
        limits = LoadLimits(max_requests=12, max_sessions=1)
        generator = LoadGenerator(fleet.url(), small_workload(), limits)
        try:
            summary = await generator.run()
        finally:
            await generator.aclose()
        after = parse_metrics(fleet.metrics())
    assert summary.requests == summary.ok == 12
    assert summary.errors == {}
    assert summary.sessions == 4  # three turns each
    assert after.requests_success is not None and before.requests_success is not None
    assert after.requests_success - before.requests_success == 12
    assert after.prompt_tokens is not None and before.prompt_tokens is not None
    assert summary.prompt_tokens == after.prompt_tokens - before.prompt_tokens
    # Sessions share the system prompt and their own history, so the replica reports cached tokens.
    assert summary.cached_ratio is not None and 0.3 < summary.cached_ratio < 1.0
    assert summary.ttft_p50_s is not None and summary.ttft_p95_s is not None
    assert summary.ttft_p50_s <= summary.ttft_p95_s <= summary.latency_p95_s  # type: ignore[operator]


@pytest.mark.integration
async def test_errors_are_counted_by_kind_and_end_their_sessions() -> None:
    with SimFleet(replicas=1) as fleet:
        fleet.set_faults("r1", error_rate=1.0)
        generator = LoadGenerator(fleet.url(), small_workload(), LoadLimits(max_requests=5))
        try:
            summary = await generator.run()
        finally:
            await generator.aclose()
    assert summary.ok == 0
    assert summary.errors == {"http_500": 5}
    assert summary.sessions == 5  # each failed first turn ends its session
    assert summary.ttft_p50_s is None and summary.cached_ratio is None


@pytest.mark.integration
async def test_duration_bounds_the_run() -> None:
    with SimFleet(replicas=1) as fleet:
        workload = small_workload(turns=(50, 50), think_time_s=0.05, session_rate=5.0)
        generator = LoadGenerator(fleet.url(), workload, LoadLimits(duration_s=1.0, grace_s=2.0))
        try:
            summary = await generator.run()
        finally:
            await generator.aclose()
    assert summary.ok > 5
    assert summary.elapsed_s < 3.0
    assert summary.requests < 50 * summary.sessions


def test_loadgen_command_defaults_are_the_demo_workload() -> None:
    import inspect

    from pcache.demo import demo_workload
    from pcache_cli.loadgen import loadgen

    defaults = {name: p.default for name, p in inspect.signature(loadgen).parameters.items()}
    workload = demo_workload()
    assert defaults["session_rate"] == workload.session_rate
    assert defaults["turns"] == "-".join(map(str, workload.turns))
    assert defaults["think_time"] == workload.think_time_s
    assert defaults["user_chars"] == "-".join(map(str, workload.user_chars))
    assert defaults["max_tokens"] == workload.max_tokens
    assert defaults["zipf"] == workload.zipf_s


def test_requests_cut_off_by_the_end_of_a_run_are_counted_apart_from_errors() -> None:
    """A request still in flight when the run's limit and grace period are over was cancelled by the
    generator itself: reporting it as a client error blamed the endpoint (round robin's long queues
    showed up as 5 "errors" in a demo comparison)."""

    def turn(ok: bool, error: str | None) -> TurnResult:
        return TurnResult(
            "s", ok, error, 0.1 if ok else None, 0.2, 100 if ok else None, 50 if ok else None, "r1"
        )

    summary = LoadSummary.of([turn(True, None), turn(False, "http_503"), turn(False, CUT_OFF)], 1, 1.0)
    assert (summary.requests, summary.ok, summary.errors, summary.cut_off) == (3, 1, {"http_503": 1}, 1)
    assert summary.to_dict()["cut_off"] == 1
