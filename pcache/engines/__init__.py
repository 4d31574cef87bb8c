"""Engine adapters: read any replica's Prometheus ``/metrics`` into one :class:`ReplicaStats`.

Families: vLLM (V1, the pre-0.10 ``gpu_*`` names, V0), SGLang, TensorRT-LLM (``trtllm-serve``) and
Triton's TensorRT-LLM backend. ``parse_metrics`` auto-detects the family unless told.
"""

from __future__ import annotations

from collections.abc import Callable

from pcache.engines.base import ReplicaStats
from pcache.engines.exposition import Samples, parse_samples
from pcache.engines.sglang import parse_sglang
from pcache.engines.trtllm import parse_triton_trtllm, parse_trtllm
from pcache.engines.vllm import parse_vllm, vllm_flavour

__all__ = ["ENGINES", "ReplicaStats", "UnknownEngine", "detect_engine", "metrics_path", "parse_metrics"]

ENGINES = ("vllm", "vllm-v0", "sglang", "trtllm", "triton-trtllm")

_PARSERS: dict[str, Callable[[Samples], ReplicaStats]] = {
    "vllm": parse_vllm,
    "vllm-v0": parse_vllm,
    "sglang": parse_sglang,
    "trtllm": parse_trtllm,
    "triton-trtllm": parse_triton_trtllm,
}
_PATHS = {"trtllm": "/prometheus/metrics"}


class UnknownEngine(ValueError):
    """An engine name that pcache has no adapter for."""


def _family_of(samples: Samples) -> str:
    names = samples.names()
    if any(name.startswith("vllm:") for name in names):
        return vllm_flavour(samples)[0]
    if any(name.startswith("sglang:") for name in names):
        return "sglang"
    if any(name.startswith(("trtllm_", "trtllm:")) for name in names):
        return "trtllm"
    if any(name.startswith("nv_trt_llm_") for name in names):
        return "triton-trtllm"
    return "unknown"


def detect_engine(text: str) -> str:
    """The engine family that produced this ``/metrics`` text, or ``"unknown"``."""
    return _family_of(parse_samples(text))


def metrics_path(engine: str) -> str:
    """Where that engine serves its metrics (``trtllm-serve`` uses ``/prometheus/metrics``).

    Triton serves ``/metrics`` on its own metrics port (8002 by default), not the inference port.
    """
    if engine not in _PARSERS and engine != "unknown":
        raise UnknownEngine(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return _PATHS.get(engine, "/metrics")


def parse_metrics(text: str, engine: str | None = None) -> ReplicaStats:
    """Parse one scrape. ``engine`` (from config) skips detection; ``vllm`` also reads V0 captures.

    Missing metrics leave fields ``None``; text of no known family gives ``engine="unknown"``.
    """
    samples = parse_samples(text)
    if engine is None:
        engine = _family_of(samples)
    elif engine not in _PARSERS:
        raise UnknownEngine(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "unknown":
        return ReplicaStats(engine="unknown")
    return _PARSERS[engine](samples)
