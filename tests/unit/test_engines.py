"""Engine adapters against real captures (tests/fixtures/engine-metrics, see PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcache.engines import UnknownEngine, detect_engine, metrics_path, parse_metrics

FIXTURES = Path(__file__).parent.parent / "fixtures" / "engine-metrics"


def capture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_vllm_v1_capture_reads_prefix_cache_counters_and_cache_config() -> None:
    stats = parse_metrics(capture("vllm-0.32-cpu/metrics_after.txt"))
    assert stats.engine == "vllm"
    assert stats.version_family == "v1"
    assert stats.model == "tiny-llama"
    assert stats.prefix_queries == 22262
    assert stats.prefix_hits == 19456
    assert stats.prompt_tokens == 22262
    assert stats.generation_tokens == 80
    assert stats.requests_success == 20  # summed over finished_reason label sets
    assert (stats.running, stats.waiting, stats.kv_usage) == (0, 0, 0.0)
    assert (stats.block_size, stats.num_blocks) == (128, 24)
    assert stats.ttft_count == 20
    assert stats.ttft_sum == pytest.approx(0.21868133544921875)
    assert stats.ttft_buckets is not None
    assert stats.ttft_buckets[2] == (0.01, 14.0)
    assert stats.ttft_buckets[-1] == (float("inf"), 20.0)


def test_fresh_vllm_server_has_zero_counters_not_missing_ones() -> None:
    stats = parse_metrics(capture("vllm-0.32-cpu/metrics_before.txt"))
    assert stats.prefix_queries == 0.0
    assert stats.prefix_hits == 0.0


def test_truncated_capture_ending_in_bare_help_line_still_parses() -> None:
    stats = parse_metrics(capture("vllm_metrics.txt"))
    assert stats.engine == "vllm"
    assert stats.model == "llama-vllm-single"
    assert stats.kv_usage == 0.0
    assert stats.prefix_queries == 0.0
    assert stats.requests_success is None  # its samples were cut off
    assert stats.ttft_buckets is None


def test_vllm_0_10_is_recognised_by_its_deprecated_gpu_prefix_names() -> None:
    stats = parse_metrics(capture("vllm_metrics_v0.10.0_excerpts.txt"))
    assert (stats.engine, stats.version_family) == ("vllm", "0.10")
    assert stats.kv_usage == pytest.approx(9.75010481363281e-06)
    assert stats.prefix_queries == 32.0
    assert stats.prefix_hits == 0.0  # only the deprecated gpu_prefix_cache_hits_total is in the excerpt


def test_pre_0_10_gpu_names_are_read_when_the_new_ones_are_absent() -> None:
    text = (
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        "# TYPE vllm:gpu_prefix_cache_queries_total counter\n"
        'vllm:gpu_prefix_cache_queries_total{engine="0",model_name="m"} 100.0\n'
        "# TYPE vllm:gpu_prefix_cache_hits_total counter\n"
        'vllm:gpu_prefix_cache_hits_total{engine="0",model_name="m"} 40.0\n'
    )
    stats = parse_metrics(text)
    assert (stats.engine, stats.version_family) == ("vllm", "pre-0.10")
    assert (stats.kv_usage, stats.prefix_queries, stats.prefix_hits) == (0.25, 100.0, 40.0)


def test_vllm_v0_capture_is_its_own_engine_with_cut_off_histogram() -> None:
    stats = parse_metrics(capture("vllm_v0_metrics_aibrix.txt"))
    assert (stats.engine, stats.version_family) == ("vllm-v0", "v0")
    assert stats.model == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert stats.kv_usage == 0.0  # gpu_cache_usage_perc
    assert stats.prefix_queries is None  # V0 only has a -1 "hit rate" gauge
    assert stats.prompt_tokens == 148.0
    assert (stats.block_size, stats.num_blocks) == (16, 81767)


def test_nim_cache_config_info_gives_block_size_and_capacity() -> None:
    stats = parse_metrics(capture("vllm_cache_config_info_nim.txt"))
    assert (stats.block_size, stats.num_blocks) == (16, 34470)


def test_sglang_hit_counters_come_from_cached_tokens_not_the_batch_gauge() -> None:
    stats = parse_metrics(capture("sglang_metrics.txt"))
    assert stats.engine == "sglang"
    assert stats.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert (stats.running, stats.waiting, stats.kv_usage) == (162, 2826, 0.28)
    assert stats.prompt_tokens == 8.128902e06
    # This older capture has no sglang:cached_tokens_total: no hit counters, and the per-batch
    # cache_hit_rate gauge (0.0075) must not be passed off as one.
    assert stats.prefix_hits is None
    assert stats.prefix_queries is None
    assert stats.ttft_count == 11008.0
    assert stats.ttft_buckets is not None
    assert stats.ttft_buckets[-1][0] == float("inf")


def test_newer_sglang_with_rank_labels_sums_cached_tokens_over_ranks() -> None:
    labels = 'engine_type="unified",model_name="m",pp_rank="0"'
    text = "".join(
        f'sglang:{name}{{{labels},tp_rank="{rank}"}} {value}\n'
        for rank in (0, 1)
        for name, value in (
            ("prompt_tokens_total", 1000),
            ("cached_tokens_total", 600),
            ("num_running_reqs", 3),
            ("token_usage", 0.5 + rank * 0.1),
            ("cache_hit_rate", 0.99),
        )
    )
    stats = parse_metrics(text)
    assert (stats.prefix_queries, stats.prefix_hits) == (2000.0, 1200.0)
    assert stats.running == 6
    assert stats.kv_usage == pytest.approx(0.55)  # a fraction: averaged, not summed


def test_triton_trtllm_reads_request_and_block_gauges() -> None:
    stats = parse_metrics(capture("triton_trtllm_metrics.txt"))
    assert stats.engine == "triton-trtllm"
    assert stats.model == "tensorrt_llm"
    assert stats.kv_usage == 0.4875  # the reported fraction, even though it disagrees with used/max
    assert (stats.running, stats.waiting) == (0, 1)
    assert (stats.block_size, stats.num_blocks) == (64, 6239)
    assert stats.prefix_hits is None


def test_trtllm_serve_collector_names() -> None:
    labels = 'engine_type="trtllm",model_name="Qwen/Qwen3-0.6B"'
    text = (
        "# TYPE trtllm_num_requests_running gauge\n"
        f"trtllm_num_requests_running{{{labels}}} 4.0\n"
        f"trtllm_num_requests_waiting{{{labels}}} 2.0\n"
        f"trtllm_kv_cache_utilization{{{labels}}} 0.3\n"
        f"trtllm_kv_cache_tokens_per_block{{{labels}}} 32.0\n"
        f"trtllm_kv_cache_max_blocks{{{labels}}} 1000.0\n"
        "# TYPE trtllm_prompt_tokens_total counter\n"
        f"trtllm_prompt_tokens_total{{{labels}}} 5000.0\n"
        "# TYPE trtllm_prompt_cached_tokens_total counter\n"
        f"trtllm_prompt_cached_tokens_total{{{labels}}} 3200.0\n"
        "# TYPE trtllm_request_success_total counter\n"
        f'trtllm_request_success_total{{{labels},finished_reason="stop"}} 150.0\n'
        f'trtllm_request_success_total{{{labels},finished_reason="length"}} 5.0\n'
        "# TYPE trtllm_time_to_first_token_seconds histogram\n"
        f'trtllm_time_to_first_token_seconds_bucket{{le="0.01",{labels}}} 0.0\n'
        f'trtllm_time_to_first_token_seconds_bucket{{le="0.05",{labels}}} 12.0\n'
        f"trtllm_time_to_first_token_seconds_count{{{labels}}} 150.0\n"
        f"trtllm_time_to_first_token_seconds_sum{{{labels}}} 8.75\n"
    )
    assert detect_engine(text) == "trtllm"
    stats = parse_metrics(text)
    assert stats.model == "Qwen/Qwen3-0.6B"
    assert (stats.running, stats.waiting, stats.kv_usage) == (4, 2, 0.3)
    assert (stats.prefix_queries, stats.prefix_hits) == (5000.0, 3200.0)
    assert stats.requests_success == 155.0
    assert stats.ttft_buckets == ((0.01, 0.0), (0.05, 12.0))  # partial: no +Inf, kept as is
    assert (stats.block_size, stats.num_blocks) == (32, 1000)


def test_trtllm_block_counters_stand_in_for_token_counters() -> None:
    text = (
        "trtllm_kv_cache_tokens_per_block 32\n"
        "trtllm_kv_cache_reused_blocks_total 30\n"
        "trtllm_kv_cache_missed_blocks_total 10\n"
    )
    stats = parse_metrics(text)
    assert (stats.prefix_queries, stats.prefix_hits) == (1280.0, 960.0)


@pytest.mark.parametrize(
    ("name", "engine"),
    [
        ("vllm-0.32-cpu/metrics_after.txt", "vllm"),
        ("vllm_v0_metrics_aibrix.txt", "vllm-v0"),
        ("sglang_metrics.txt", "sglang"),
        ("triton_trtllm_metrics.txt", "triton-trtllm"),
    ],
)
def test_detect_engine_from_text(name: str, engine: str) -> None:
    assert detect_engine(capture(name)) == engine


def test_created_samples_are_ignored() -> None:
    text = (
        "# TYPE vllm:prompt_tokens_created gauge\n"
        'vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9\n'
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 5.0\n'
    )
    assert parse_metrics(text).prompt_tokens == 5.0


def test_several_engines_in_one_scrape_are_summed() -> None:
    text = "".join(
        f'vllm:{name}{{engine="{engine}",model_name="m"}} {value}\n'
        for engine in ("0", "1")
        for name, value in (("num_requests_running", 2), ("prefix_cache_hits_total", 10))
    )
    stats = parse_metrics(text)
    assert (stats.running, stats.prefix_hits) == (4, 20.0)


def test_line_cut_mid_sample_recovers_the_readable_lines() -> None:
    text = capture("vllm-0.32-cpu/metrics_after.txt")
    cut = text.index("vllm:generation_tokens_total") + 20
    damaged = text[:cut] + '\nvllm:prompt_tokens_total{engine="0" 12\n'
    stats = parse_metrics(damaged)
    assert stats.engine == "vllm"
    assert stats.prefix_hits == 19456
    assert stats.generation_tokens is None


def test_unknown_text_is_reported_as_unknown_not_an_error() -> None:
    assert parse_metrics("some_other_metric 1\n").engine == "unknown"
    assert parse_metrics("not prometheus at all {{{").engine == "unknown"
    assert parse_metrics("").engine == "unknown"


def test_metrics_path_per_engine() -> None:
    assert metrics_path("vllm") == "/metrics"
    assert metrics_path("sglang") == "/metrics"
    assert metrics_path("trtllm") == "/prometheus/metrics"
    with pytest.raises(UnknownEngine):
        metrics_path("llamacpp")


def test_explicit_unknown_engine_name_is_rejected() -> None:
    with pytest.raises(UnknownEngine):
        parse_metrics("", engine="nope")
