"""SGLang adapter (``sglang:*``).

The prefix-cache hit rate comes from the ``cached_tokens_total`` / ``prompt_tokens_total`` counters;
the ``cache_hit_rate`` gauge only describes the latest batch, so it is never used as a rate.

With the hierarchical cache (``--enable-hierarchical-cache``, HiCache) the cached tokens include
those loaded back from host memory, counted by ``sglang:load_back_tokens_total{pool="kv"}`` (the
name as SGLang's own HiCache tests read it; see tests/fixtures/PROVENANCE.md): those are the host
tier's hits, the rest the GPU's.
"""

from __future__ import annotations

from pcache.engines.base import TIERS, ReplicaStats
from pcache.engines.exposition import Samples

__all__ = ["parse_sglang"]


def _hits_by_tier(samples: Samples, cached: float | None) -> tuple[tuple[str, float], ...] | None:
    """GPU and host hits of a HiCache replica (None without the hierarchical cache's counter)."""
    host = samples.total("sglang:load_back_tokens_total", pool="kv")
    if host is None:
        host = samples.total("sglang:load_back_tokens_total")
    if host is None or cached is None:
        return None
    host = min(host, cached)
    totals = dict.fromkeys(TIERS, 0.0)
    totals["gpu"], totals["host"] = cached - host, host
    return tuple(totals.items())


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
        hits_by_tier=_hits_by_tier(samples, cached),
    )
