"""SGLang adapter (``sglang:*``).

The prefix-cache hit rate comes from the ``cached_tokens_total`` / ``prompt_tokens_total`` counters;
the ``cache_hit_rate`` gauge only describes the latest batch, so it is never used as a rate.
"""

from __future__ import annotations

from pcache.engines.base import ReplicaStats
from pcache.engines.exposition import Samples

__all__ = ["parse_sglang"]


def parse_sglang(samples: Samples) -> ReplicaStats:
    """Normalise an SGLang scrape (older ``model_name``-only labels and the newer rank labels alike)."""
    prompt_tokens = samples.total("sglang:prompt_tokens_total")
    cached = samples.total("sglang:cached_tokens_total")
    buckets, ttft_sum, ttft_count = samples.histogram("sglang:time_to_first_token_seconds")
    return ReplicaStats(
        engine="sglang",
        model=samples.first_label("model_name", "sglang:"),
        kv_usage=samples.mean("sglang:token_usage"),
        running=samples.count("sglang:num_running_reqs"),
        waiting=samples.count("sglang:num_queue_reqs"),
        prefix_queries=prompt_tokens if cached is not None else None,
        prefix_hits=cached,
        prompt_tokens=prompt_tokens,
        generation_tokens=samples.total("sglang:generation_tokens_total"),
        requests_success=samples.total("sglang:num_requests_total"),
        ttft_buckets=buckets,
        ttft_sum=ttft_sum,
        ttft_count=ttft_count,
        e2e_buckets=samples.histogram("sglang:e2e_request_latency_seconds")[0],
        block_size=samples.count("sglang:page_size"),
        num_blocks=None,
        version_family="with-cached-tokens" if cached is not None else "legacy",
    )
