"""vLLM adapter: V1 names, the deprecated pre-0.10 ``gpu_*`` names, and the legacy V0 engine."""

from __future__ import annotations

import math

from pcache.engines.base import TIERS, ReplicaStats
from pcache.engines.exposition import Samples

__all__ = ["parse_vllm", "vllm_flavour"]

_V0_MARKERS = ("vllm:num_requests_swapped", "vllm:cpu_cache_usage_perc", "vllm:gpu_prefix_cache_hit_rate")
_GPU_NAMES = (
    "vllm:gpu_cache_usage_perc",
    "vllm:gpu_prefix_cache_queries_total",
    "vllm:gpu_prefix_cache_hits_total",
)


def vllm_flavour(samples: Samples) -> tuple[str, str]:
    """``(engine, version_family)``: ``vllm``/``v1``, ``vllm``/``0.10`` (both name sets), ``vllm``/
    ``pre-0.10`` (only the ``gpu_*`` names) or ``vllm-v0``/``v0`` (the V0 engine)."""
    modern = "vllm:kv_cache_usage_perc" in samples or "vllm:prefix_cache_queries_total" in samples
    gpu_names = any(name in samples for name in _GPU_NAMES)
    if modern:
        return "vllm", "0.10" if gpu_names else "v1"
    if any(name in samples for name in _V0_MARKERS):
        return "vllm-v0", "v0"
    return "vllm", "pre-0.10" if gpu_names else "v1"


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


# vLLM 0.32's CacheHitSource values (vllm/v1/metrics/cache_hit_source.py, and the help text of
# vllm:prompt_tokens_cached_by_source in the capture under tests/fixtures/engine-metrics/vllm-0.32-cpu):
# device = local HBM, host = offloaded to DRAM (OffloadingConnector), disk, p2p = from another vLLM
# instance, external_unspecified = an uninstrumented connector or remote store (LMCache, Mooncake).
_SOURCE_TIERS = {
    "device": "gpu",
    "host": "host",
    "disk": "disk",
    "p2p": "peer",
    "external_unspecified": "pool",
}


def _hits_by_tier(samples: Samples) -> tuple[tuple[str, float], ...] | None:
    """``vllm:prompt_tokens_cached_by_source_total`` summed per tier, in ``TIERS`` order.

    Before that counter (vLLM < 0.32) a connector's hits are known only in total
    (``vllm:external_prefix_cache_hits_total``): they are booked to the pool, the GPU's are
    ``vllm:prefix_cache_hits_total``. LMCache's own ``lmcache:num_hit_tokens_total`` (its
    ``LMCStatsMonitor``) does not split its local CPU backend from its remote one, so it cannot
    tell host from pool either and is not used for the split.
    """
    rows = samples.by_name.get("vllm:prompt_tokens_cached_by_source_total")
    if not rows:
        local = samples.total("vllm:prefix_cache_hits_total")
        external = samples.total("vllm:external_prefix_cache_hits_total")
        if local is None or external is None:
            return None
        totals = dict.fromkeys(TIERS, 0.0)
        totals["gpu"], totals["pool"] = local, external
        return tuple(totals.items())
    totals = dict.fromkeys(TIERS, 0.0)
    for labels, value in rows:
        if math.isnan(value):
            continue
        tier = _SOURCE_TIERS.get(labels.get("source", ""), "pool")  # an unknown source is external
        totals[tier] += value
    return tuple(totals.items())


def parse_vllm(samples: Samples) -> ReplicaStats:
    """Normalise a vLLM scrape. Prefers the current names and falls back to the ``gpu_*`` ones."""
    engine, family = vllm_flavour(samples)
    kv_usage = samples.mean("vllm:kv_cache_usage_perc")
    if kv_usage is None:
        kv_usage = samples.mean("vllm:gpu_cache_usage_perc")
    queries = samples.total("vllm:prefix_cache_queries_total")
    if queries is None:
        queries = samples.total("vllm:gpu_prefix_cache_queries_total")
    hits = samples.total("vllm:prefix_cache_hits_total")
    if hits is None:
        hits = samples.total("vllm:gpu_prefix_cache_hits_total")
    # Tokens a KV connector loaded (host DRAM, a pool) are cached too: the engine computed none of them.
    external = samples.total("vllm:external_prefix_cache_hits_total")
    if hits is not None and external is not None:
        hits += external
    buckets, ttft_sum, ttft_count = samples.histogram("vllm:time_to_first_token_seconds")
    block_size = _int(samples.label("vllm:cache_config_info", "block_size"))
    num_blocks = _int(samples.label("vllm:cache_config_info", "num_gpu_blocks"))
    return ReplicaStats(
        engine=engine,
        model=samples.first_label("model_name", "vllm:"),
        kv_usage=kv_usage,
        running=samples.count("vllm:num_requests_running"),
        waiting=samples.count("vllm:num_requests_waiting"),
        prefix_queries=queries,
        prefix_hits=hits,
        prompt_tokens=samples.total("vllm:prompt_tokens_total"),
        generation_tokens=samples.total("vllm:generation_tokens_total"),
        requests_success=samples.total("vllm:request_success_total"),
        ttft_buckets=buckets,
        ttft_sum=ttft_sum,
        ttft_count=ttft_count,
        e2e_buckets=samples.histogram("vllm:e2e_request_latency_seconds")[0],
        block_size=block_size,
        num_blocks=num_blocks,
        version_family=family,
        hits_by_tier=_hits_by_tier(samples),
    )
