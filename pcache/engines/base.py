"""What an engine adapter extracts from one scrape of a replica's ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TIERS", "ReplicaStats"]


TIERS = ("gpu", "host", "disk", "peer", "pool")
"""KV tiers a cached token can come from: the replica's GPU, its host DRAM, its disk, another
replica (peer to peer), a shared pool (a remote store such as LMCache's or Mooncake's)."""


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One scrape, normalised across engine families. Missing metrics stay ``None``.

    Counters are raw cumulative values; rates come from comparing two scrapes (robust to resets).
    ``ttft_buckets`` and ``e2e_buckets`` are cumulative ``(le, count)`` pairs in ascending ``le``
    order, ``+Inf`` last when present, so fleet percentiles can be computed from merged buckets.
    """

    engine: str  # vllm | vllm-v0 | sglang | trtllm | triton-trtllm | unknown
    model: str | None = None
    kv_usage: float | None = None  # 0..1
    running: int | None = None
    waiting: int | None = None
    prefix_queries: float | None = None  # tokens queried against the prefix cache (counter)
    prefix_hits: float | None = None  # tokens hit (counter)
    prompt_tokens: float | None = None  # counter
    generation_tokens: float | None = None  # counter
    requests_success: float | None = None  # counter
    ttft_buckets: tuple[tuple[float, float], ...] | None = None
    ttft_sum: float | None = None
    ttft_count: float | None = None
    e2e_buckets: tuple[tuple[float, float], ...] | None = None  # end-to-end request latency
    block_size: int | None = None
    num_blocks: int | None = None
    version_family: str | None = None  # e.g. "v1", "v0", "0.10"
    # Cached prompt tokens by the tier that supplied them (counters, tiers named as in ``TIERS``):
    # ``prefix_hits`` is their sum where the engine reports tiers (local + external hits).
    hits_by_tier: tuple[tuple[str, float], ...] | None = None
