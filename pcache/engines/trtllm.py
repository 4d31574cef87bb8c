"""TensorRT-LLM adapters: ``trtllm-serve`` (``trtllm_*`` at ``/prometheus/metrics``) and Triton's
TensorRT-LLM backend (``nv_trt_llm_*``)."""

from __future__ import annotations

from pcache.engines.base import ReplicaStats
from pcache.engines.exposition import Samples

__all__ = ["parse_triton_trtllm", "parse_trtllm"]


def _normalised(samples: Samples) -> Samples:
    """Dynamo re-exports trtllm-serve's metrics as ``trtllm:*``; read both spellings as ``trtllm_*``."""
    if not any(name.startswith("trtllm:") for name in samples.names()):
        return samples
    renamed = Samples(damaged=samples.damaged)
    for name, values in samples.by_name.items():
        key = "trtllm_" + name[len("trtllm:") :] if name.startswith("trtllm:") else name
        renamed.by_name[key].extend(values)
    return renamed


def parse_trtllm(samples: Samples) -> ReplicaStats:
    """Normalise a ``trtllm-serve`` scrape (its ``MetricsCollector`` names)."""
    samples = _normalised(samples)
    block_size = samples.count("trtllm_kv_cache_tokens_per_block")
    max_blocks = samples.count("trtllm_kv_cache_max_blocks")
    used_blocks = samples.total("trtllm_kv_cache_used_blocks")
    kv_usage = samples.mean("trtllm_kv_cache_utilization")
    if kv_usage is None and used_blocks is not None and max_blocks:
        kv_usage = used_blocks / max_blocks
    prompt_tokens = samples.total("trtllm_prompt_tokens_total")
    hits = samples.total("trtllm_prompt_cached_tokens_total")
    queries = prompt_tokens if hits is not None else None
    if hits is None and block_size:
        reused = samples.total("trtllm_kv_cache_reused_blocks_total")
        missed = samples.total("trtllm_kv_cache_missed_blocks_total")
        if reused is not None and missed is not None:
            hits, queries = reused * block_size, (reused + missed) * block_size
    buckets, ttft_sum, ttft_count = samples.histogram("trtllm_time_to_first_token_seconds")
    return ReplicaStats(
        engine="trtllm",
        model=samples.first_label("model_name", "trtllm_"),
        kv_usage=kv_usage,
        running=samples.count("trtllm_num_requests_running"),
        waiting=samples.count("trtllm_num_requests_waiting"),
        prefix_queries=queries,
        prefix_hits=hits,
        prompt_tokens=prompt_tokens,
        generation_tokens=samples.total("trtllm_generation_tokens_total"),
        requests_success=samples.total("trtllm_request_success_total"),
        ttft_buckets=buckets,
        ttft_sum=ttft_sum,
        ttft_count=ttft_count,
        e2e_buckets=samples.histogram("trtllm_e2e_request_latency_seconds")[0],
        block_size=block_size,
        num_blocks=max_blocks,
        version_family="trtllm-serve",
    )


def parse_triton_trtllm(samples: Samples) -> ReplicaStats:
    """Normalise a Triton TensorRT-LLM backend scrape (request and KV-block gauges; no TTFT)."""
    requests = "nv_trt_llm_request_metrics"
    blocks = "nv_trt_llm_kv_cache_block_metrics"
    max_blocks = samples.count(blocks, kv_cache_block_type="max")
    used = samples.total(blocks, kv_cache_block_type="used")
    kv_usage = samples.mean(blocks, kv_cache_block_type="fraction")
    if kv_usage is None and used is not None and max_blocks:
        kv_usage = used / max_blocks
    return ReplicaStats(
        engine="triton-trtllm",
        model=samples.first_label("model", "nv_trt_llm_"),
        kv_usage=kv_usage,
        running=samples.count(requests, request_type="active"),
        waiting=samples.count(requests, request_type="waiting"),
        block_size=samples.count(blocks, kv_cache_block_type="tokens_per"),
        num_blocks=max_blocks,
        version_family="triton",
    )
