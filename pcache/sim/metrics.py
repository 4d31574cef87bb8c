"""A replica's ``/metrics``: vLLM V1's exact names, types, labels and buckets, via ``prometheus_client``.

Each replica owns its own :class:`CollectorRegistry`; a simulated restart builds a fresh one, so
counters start again from zero and ``_created`` moves forward, just as when a real engine restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pcache.sim.tiers import TierHit

__all__ = ["RequestRecord", "VllmMetrics"]

_LABELS = ("model_name", "engine")
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
_FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")


def _one_two_five(limit: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 token buckets up to the model's context length."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > limit:
                return tuple(buckets)
            buckets.append(float(value))
        exponent += 1


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """Everything the metrics need about one finished request."""

    prompt_tokens: int
    cached_tokens: int
    generation_tokens: int
    max_tokens: int
    finished_reason: str
    queue_time: float
    prefill_time: float
    decode_time: float
    ttft: float
    e2e: float


class VllmMetrics:
    """The metric families of one vLLM V1 engine, in a registry of their own."""

    def __init__(
        self,
        *,
        model: str,
        block_size: int,
        num_gpu_blocks: int,
        max_model_len: int,
        running: Callable[[], float],
        waiting: Callable[[], float],
        kv_usage: Callable[[], float],
        num_cpu_blocks: int | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = (model, "0")
        reg = self.registry

        def gauge(name: str, doc: str, source: Callable[[], float]) -> None:
            Gauge(name, doc, _LABELS, registry=reg).labels(*labels).set_function(source)

        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling "
            "capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked "
            "status). Sum of all reasons equals vllm:num_requests_waiting.",
            (*_LABELS, "reason"),
            registry=reg,
        )
        by_reason.labels(*labels, "capacity").set_function(waiting)
        by_reason.labels(*labels, "deferred").set(0)
        sleep_state = Gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            (*_LABELS, "sleep_state"),
            registry=reg,
        )
        sleep_state.labels(*labels, "awake").set(1)
        sleep_state.labels(*labels, "weights_offloaded").set(0)
        sleep_state.labels(*labels, "discard_all").set(0)
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, _LABELS, registry=reg)

        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        ).labels(*labels)
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        ).labels(*labels)
        self.external_queries = counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, in terms of "
            "number of queried tokens.",
        ).labels(*labels)
        self.external_hits = counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, in terms of "
            "number of cached tokens.",
        ).labels(*labels)
        # vLLM 0.32's CacheHitSource (vllm/v1/metrics/cache_hit_source.py) and its help text.
        cached_by_source = Counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host "
            "(offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
            "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
            "vllm:external_prefix_cache_hits.",
            (*_LABELS, "source"),
            registry=reg,
        )
        self.cached_by_source = {
            source: cached_by_source.labels(*labels, source)
            for source in ("device", "host", "p2p", "disk", "external_unspecified")
        }
        counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.").labels(*labels)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.").labels(
            *labels
        )
        by_source = Counter(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            (*_LABELS, "source"),
            registry=reg,
        )
        self.prompt_computed = by_source.labels(*labels, "local_compute")
        self.prompt_cache_hit = by_source.labels(*labels, "local_cache_hit")
        self.prompt_external = by_source.labels(*labels, "external_kv_transfer")
        self.prompt_cached = counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        ).labels(*labels)
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        ).labels(*labels)
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*_LABELS, "finished_reason"),
            registry=reg,
        )
        self.success = {reason: success.labels(*labels, reason) for reason in _FINISHED_REASONS}

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            family = Histogram(name, doc, _LABELS, buckets=buckets, registry=reg)
            child: Histogram = family.labels(*labels)
            return child

        token_buckets = _one_two_five(max_model_len)
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self.request_max_generation = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            token_buckets,
        )
        self.params_n = histogram(
            "vllm:request_params_n", "Histogram of the n request parameter.", (1.0, 2.0, 5.0, 10.0, 20.0)
        )
        self.params_max_tokens = histogram(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", token_buckets
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", _TTFT_BUCKETS
        )
        self.inter_token = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", _ITL_BUCKETS
        )
        self.time_per_output_token = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            _ITL_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            _LATENCY_BUCKETS,
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            _LATENCY_BUCKETS,
        )
        self.inference_time = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            _LATENCY_BUCKETS,
        )
        self.prefill_time = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            _LATENCY_BUCKETS,
        )
        self.decode_time = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            _LATENCY_BUCKETS,
        )
        self.preemptions = histogram(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0),
        )
        self.prefill_kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            token_buckets,
        )
        Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            (
                "block_size",
                "cache_dtype",
                "enable_prefix_caching",
                "engine",
                "gpu_memory_utilization",
                "kv_cache_size_tokens",
                "num_cpu_blocks",
                "num_gpu_blocks",
                "num_gpu_blocks_override",
                "prefix_caching_hash_algo",
            ),
            registry=reg,
        ).labels(
            str(block_size),
            "auto",
            "True",
            "0",
            "0.9",
            str(block_size * num_gpu_blocks),
            str(num_cpu_blocks),
            str(num_gpu_blocks),
            "None",
            "xxhash",
        ).set(1)

    def record_admission(self, prompt_tokens: int, hit: TierHit, *, external: bool = False) -> None:
        """Count a request's prefix-cache lookup when it is scheduled (as vLLM does).

        The GPU's hits are local (``prefix_cache_*``, source ``device``); a configured connector is
        asked about the tokens after them (``external_prefix_cache_queries``, as vLLM's scheduler
        counts ``num_tokens - num_new_local_computed_tokens``) and its hits split into ``host``
        (offloaded DRAM) and ``external_unspecified`` (the shared pool, a remote store)."""
        device, loaded = hit.device_tokens, hit.host_tokens + hit.pool_tokens
        cached = device + loaded
        self.prefix_queries.inc(prompt_tokens)
        self.prefix_hits.inc(device)
        if external and prompt_tokens > device:
            self.external_queries.inc(prompt_tokens - device)
            self.external_hits.inc(loaded)
        self.cached_by_source["device"].inc(device)
        self.cached_by_source["host"].inc(hit.host_tokens)
        self.cached_by_source["external_unspecified"].inc(hit.pool_tokens)
        self.prompt_tokens.inc(prompt_tokens)
        self.prompt_computed.inc(prompt_tokens - cached)
        self.prompt_cache_hit.inc(device)
        self.prompt_external.inc(loaded)
        self.prompt_cached.inc(cached)

    def record_first_token(self, ttft: float) -> None:
        """Observe a time to first token."""
        self.ttft.observe(ttft)

    def record_inter_token(self, seconds: float, count: int = 1) -> None:
        """Observe ``count`` inter-token gaps of ``seconds``."""
        for _ in range(count):
            self.inter_token.observe(seconds)

    def record_finished(self, record: RequestRecord) -> None:
        """Observe everything vLLM records when a request finishes."""
        self.generation_tokens.inc(record.generation_tokens)
        self.success[record.finished_reason].inc()
        self.request_prompt_tokens.observe(record.prompt_tokens)
        self.request_generation_tokens.observe(record.generation_tokens)
        self.request_max_generation.observe(record.max_tokens)
        self.params_n.observe(1)
        self.params_max_tokens.observe(record.max_tokens)
        self.e2e.observe(record.e2e)
        self.queue_time.observe(record.queue_time)
        self.inference_time.observe(record.prefill_time + record.decode_time)
        self.prefill_time.observe(record.prefill_time)
        self.decode_time.observe(record.decode_time)
        self.preemptions.observe(0)
        self.prefill_kv_computed.observe(record.prompt_tokens - record.cached_tokens)
        if record.generation_tokens > 1:
            self.time_per_output_token.observe(record.decode_time / (record.generation_tokens - 1))

    def render(self) -> bytes:
        """The Prometheus text exposition of this engine."""
        return generate_latest(self.registry)
