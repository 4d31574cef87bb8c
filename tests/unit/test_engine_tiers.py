"""Adapters read cached tokens by tier: vLLM's cached-by-source counters, SGLang HiCache's load-backs."""

from __future__ import annotations

from pathlib import Path

from pcache.engines import parse_metrics

FIXTURES = Path(__file__).parent.parent / "fixtures" / "engine-metrics"

VLLM_TIERED = """\
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 300.0
vllm:external_prefix_cache_queries_total{engine="0",model_name="m"} 700.0
vllm:external_prefix_cache_hits_total{engine="0",model_name="m"} 250.0
vllm:prompt_tokens_cached_by_source_total{engine="0",model_name="m",source="device"} 300.0
vllm:prompt_tokens_cached_by_source_total{engine="0",model_name="m",source="host"} 200.0
vllm:prompt_tokens_cached_by_source_total{engine="0",model_name="m",source="disk"} 0.0
vllm:prompt_tokens_cached_by_source_total{engine="0",model_name="m",source="p2p"} 10.0
vllm:prompt_tokens_cached_by_source_total{engine="0",model_name="m",source="external_unspecified"} 40.0
"""


def test_real_vllm_032_capture_reports_every_hit_on_the_gpu() -> None:
    stats = parse_metrics((FIXTURES / "vllm-0.32-cpu" / "metrics_after.txt").read_text(encoding="utf-8"))
    tiers = dict(stats.hits_by_tier or ())
    assert tiers["gpu"] == stats.prefix_hits == 19456.0
    assert tiers["host"] == tiers["pool"] == tiers["peer"] == tiers["disk"] == 0.0


def test_vllm_hits_include_a_connectors_and_split_by_source() -> None:
    stats = parse_metrics(VLLM_TIERED)
    assert stats.prefix_hits == 550.0  # local + external: the engine computed none of them
    assert dict(stats.hits_by_tier or ()) == {
        "gpu": 300.0,
        "host": 200.0,
        "disk": 0.0,
        "peer": 10.0,
        "pool": 40.0,
    }


def test_vllm_before_032_books_external_hits_to_the_pool() -> None:
    older = "\n".join(line for line in VLLM_TIERED.splitlines() if "by_source" not in line)
    tiers = dict(parse_metrics(older).hits_by_tier or ())
    assert (tiers["gpu"], tiers["pool"], tiers["host"]) == (300.0, 250.0, 0.0)


def test_vllm_without_any_tier_counter_gives_no_split() -> None:
    plain = "\n".join(
        line for line in VLLM_TIERED.splitlines() if "external" not in line and "source" not in line
    )
    assert parse_metrics(plain).hits_by_tier is None


def test_sglang_hicache_load_backs_are_host_hits() -> None:
    base = (FIXTURES / "sglang_metrics.txt").read_text(encoding="utf-8")
    assert parse_metrics(base).hits_by_tier is None  # no hierarchical cache
    text = (
        'sglang:prompt_tokens_total{model_name="m"} 1000.0\n'
        'sglang:cached_tokens_total{model_name="m"} 600.0\n'
        'sglang:load_back_tokens_total{model_name="m",pool="kv"} 150.0\n'
        'sglang:load_back_tokens_total{model_name="m",pool="mamba"} 4.0\n'
    )
    stats = parse_metrics(text)
    tiers = dict(stats.hits_by_tier or ())
    assert (tiers["gpu"], tiers["host"]) == (450.0, 150.0)
    assert sum(tiers.values()) == stats.prefix_hits
