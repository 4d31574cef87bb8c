"""The simulator's /metrics against a real vLLM 0.32 capture: same names, types, labels, buckets."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pcache.engines import parse_metrics
from pcache.sim.config import ReplicaSpec
from pcache.sim.replica import SimReplica

CAPTURE = Path(__file__).parent.parent / "fixtures" / "engine-metrics" / "vllm-0.32-cpu" / "metrics_after.txt"


def families(text: str) -> dict[str, tuple[str, set[str], tuple[str, ...]]]:
    """name -> (type, label names, bucket edges) for every ``vllm:`` family."""
    out = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("vllm:"):
            continue
        labels = {key for sample in family.samples for key in sample.labels if key != "le"}
        edges = tuple(sample.labels["le"] for sample in family.samples if sample.name.endswith("_bucket"))
        out[family.name] = (family.type, labels, edges)
    return out


async def served_replica() -> SimReplica:
    # the capture's engine: max_model_len 2048, so token histograms end at 2000 like the capture's
    replica = SimReplica(ReplicaSpec(name="r1", model="tiny-llama", max_model_len=2048))
    async with replica.generation("z" * 4 * 100, 3) as generation:
        await generation.prefill()
        await generation.complete()
    return replica


async def test_every_simulated_family_exists_in_real_vllm_with_same_type_labels_and_buckets() -> None:
    real = families(CAPTURE.read_text(encoding="utf-8"))
    simulated = families((await served_replica()).metrics.render().decode())
    assert len(simulated) >= 30
    for name, (kind, labels, edges) in simulated.items():
        assert name in real, name
        real_kind, real_labels, real_edges = real[name]
        assert kind == real_kind, name
        if name == "vllm:cache_config_info":
            assert labels <= real_labels
        else:
            assert labels == real_labels, name
            assert edges == real_edges, name


async def test_cache_config_info_reports_block_size_and_capacity() -> None:
    text = (await served_replica()).metrics.render().decode()
    stats = parse_metrics(text)
    assert (stats.block_size, stats.num_blocks) == (16, 4096)
    assert 'enable_prefix_caching="True"' in text


async def test_vllm_adapter_reads_simulator_and_real_capture_into_the_same_fields() -> None:
    real = parse_metrics(CAPTURE.read_text(encoding="utf-8"))
    simulated = parse_metrics((await served_replica()).metrics.render().decode())
    present = {field.name for field in fields(real) if getattr(real, field.name) is not None}
    assert present == {
        field.name for field in fields(simulated) if getattr(simulated, field.name) is not None
    }
    assert (simulated.engine, simulated.version_family, simulated.model) == ("vllm", "v1", "tiny-llama")
    assert simulated.prefix_queries == 100
    assert simulated.generation_tokens == 3
    assert simulated.requests_success == 1
    assert simulated.ttft_count == 1
