"""Settings of a simulated fleet: per-replica timing, cache size and faults, loadable from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pcache.kv.events import EventsEndpoint
from pcache.sim.tiers import PoolSpec

__all__ = [
    "ConfigError",
    "FaultSettings",
    "FleetConfig",
    "ReplicaSpec",
    "Timing",
    "check_chars_per_token",
    "load_fleet_config",
    "pool_from",
]


class ConfigError(ValueError):
    """A fleet file or flag that cannot be turned into replica specs."""


@dataclass(frozen=True, slots=True)
class Timing:
    """The latency model. Defaults are scaled down so a demo fleet answers in milliseconds.

    TTFT = queue wait + ``t0`` + uncached prompt tokens x ``per_prompt_token``; then one token
    every ``inter_token`` seconds. Everything is multiplied by the replica's ``slow_factor``.
    """

    t0: float = 0.002
    per_prompt_token: float = 0.000020
    inter_token: float = 0.001


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Faults a replica shows; settable at start-up (config) and at run time (``POST /sim/faults``)."""

    slow_factor: float = 1.0
    error_rate: float = 0.0
    stall: bool = False
    die_after_chunks: int | None = None
    unhealthy: bool = False

    def updated(self, changes: dict[str, Any]) -> FaultSettings:
        """A copy with ``changes`` applied after validating every key and value."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known - {"restart"})
        if unknown:
            raise ConfigError(f"unknown fault setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "restart":
                continue
            values[key] = _check_fault(key, value)
        return replace(self, **values)


def _check_fault(key: str, value: Any) -> Any:
    if key in ("stall", "unhealthy"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        return value
    if key == "die_after_chunks":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError("die_after_chunks must be a non-negative integer or null")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number")
    number = float(value)
    if key == "slow_factor" and number <= 0:
        raise ConfigError("slow_factor must be > 0")
    if key == "error_rate" and not 0.0 <= number <= 1.0:
        raise ConfigError("error_rate must be between 0 and 1")
    return number


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One simulated replica: identity, engine shape and behaviour."""

    name: str
    port: int = 0
    model: str = "sim-model"
    block_size: int = 16
    num_gpu_blocks: int = 4096
    max_num_seqs: int = 64
    max_model_len: int = 32768
    default_max_tokens: int = 16
    timing: Timing = field(default_factory=Timing)
    faults: FaultSettings = field(default_factory=FaultSettings)
    seed: int = 0
    kv_events: EventsEndpoint | None = None  # publish KV events like vLLM's --kv-events-config
    dev_mode: bool = False  # serve /reset_prefix_cache, as vLLM does with VLLM_SERVER_DEV_MODE=1
    chars_per_token: float = 4.0  # the stand-in tokenizer's width (a real BPE gives ~2.4-3.2)
    host_blocks: int = 0  # host-DRAM tier under the GPU cache (vLLM's CPU offloading); 0 = none
    host_per_token: float = 0.000002  # seconds to load one token's KV from host DRAM


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What ``pcache sim`` runs: the host, the replicas and the shared pool they use, if any."""

    host: str
    replicas: tuple[ReplicaSpec, ...]
    pool: PoolSpec | None = None


_REPLICA_KEYS = {
    "name",
    "port",
    "model",
    "block_size",
    "num_gpu_blocks",
    "max_num_seqs",
    "max_model_len",
    "default_max_tokens",
    "speed",
    "t0_ms",
    "per_token_us",
    "inter_token_ms",
    "faults",
    "kv_events",
    "chars_per_token",
    "host_blocks",
    "host_load_us_per_token",
}
_POOL_KEYS = {"blocks", "latency_ms", "per_token_us"}


def pool_from(raw: Any, where: str) -> PoolSpec | None:
    """``pool: {blocks, latency_ms, per_token_us}`` (a shared pool for the fleet), or null for none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: pool must be a mapping with blocks")
    unknown = sorted(set(raw) - _POOL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: pool: unknown key(s) {', '.join(unknown)}")
    blocks = raw.get("blocks")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ConfigError(f"{where}: pool.blocks must be a positive integer")
    numbers: dict[str, float] = {}
    for key in ("latency_ms", "per_token_us"):
        value = raw.get(key, 10.0 if key == "latency_ms" else 2.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: pool.{key} must be a non-negative number")
        numbers[key] = float(value)
    return PoolSpec(blocks, numbers["latency_ms"] / 1e3, numbers["per_token_us"] / 1e6)


def _kv_events_from(raw: Any, where: str) -> EventsEndpoint | None:
    """``kv_events: {endpoint, replay_endpoint, topic}`` (vLLM's names), or null for none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: kv_events must be a mapping with an endpoint")
    unknown = sorted(set(raw) - {"endpoint", "replay_endpoint", "topic"})
    if unknown:
        raise ConfigError(f"{where}: kv_events: unknown key(s) {', '.join(unknown)}")
    endpoint, replay, topic = raw.get("endpoint"), raw.get("replay_endpoint"), raw.get("topic", "")
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ConfigError(f"{where}: kv_events.endpoint must be a ZMQ address such as tcp://127.0.0.1:*")
    if replay is not None and (not isinstance(replay, str) or "://" not in replay):
        raise ConfigError(f"{where}: kv_events.replay_endpoint must be a ZMQ address")
    if not isinstance(topic, str):
        raise ConfigError(f"{where}: kv_events.topic must be a string")
    return EventsEndpoint(endpoint=endpoint, replay_endpoint=replay, topic=topic)


def check_chars_per_token(value: Any, where: str = "chars_per_token") -> float:
    """A tokenizer width of 1 to 16 characters per token (fractions allowed, such as 2.7)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1.0 <= value <= 16.0:
        raise ConfigError(f"{where}: chars_per_token must be a number from 1 to 16")
    return float(value)


def _replica_from(raw: dict[str, Any], base: ReplicaSpec, where: str) -> ReplicaSpec:
    unknown = sorted(set(raw) - _REPLICA_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    spec = base
    ints = (
        "port",
        "block_size",
        "num_gpu_blocks",
        "max_num_seqs",
        "max_model_len",
        "default_max_tokens",
        "host_blocks",
    )
    for key in ints:
        if key in raw:
            value = raw[key]
            least = 0 if key in ("port", "host_blocks") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{where}: {key} must be a positive integer")
            overrides: dict[str, Any] = {key: value}
            spec = replace(spec, **overrides)
    for key in ("name", "model"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ConfigError(f"{where}: {key} must be a non-empty string")
            names: dict[str, Any] = {key: raw[key]}
            spec = replace(spec, **names)
    if "kv_events" in raw:
        spec = replace(spec, kv_events=_kv_events_from(raw["kv_events"], where))
    if "chars_per_token" in raw:
        spec = replace(spec, chars_per_token=check_chars_per_token(raw["chars_per_token"], where))
    if "host_load_us_per_token" in raw:
        value = raw["host_load_us_per_token"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: host_load_us_per_token must be a non-negative number")
        spec = replace(spec, host_per_token=float(value) / 1e6)
    timing = spec.timing
    for key, attr, scale in (
        ("t0_ms", "t0", 1e-3),
        ("per_token_us", "per_prompt_token", 1e-6),
        ("inter_token_ms", "inter_token", 1e-3),
    ):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{where}: {key} must be a non-negative number")
            timing = replace(timing, **{attr: float(value) * scale})
    spec = replace(spec, timing=timing)
    faults = spec.faults
    if "speed" in raw:
        speed = raw["speed"]
        if isinstance(speed, bool) or not isinstance(speed, int | float) or speed <= 0:
            raise ConfigError(f"{where}: speed must be a positive number")
        faults = replace(faults, slow_factor=1.0 / float(speed))
    if "faults" in raw:
        if not isinstance(raw["faults"], dict) or "restart" in raw["faults"]:
            raise ConfigError(f"{where}: faults must be a mapping of fault settings")
        try:
            faults = faults.updated(raw["faults"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return replace(spec, faults=faults)


def load_fleet_config(
    path: Path | None,
    *,
    replicas: int | None,
    base_port: int | None,
    host: str,
    base: ReplicaSpec,
    pool: PoolSpec | None = None,
) -> FleetConfig:
    """Build the fleet from an optional YAML file and the command-line flags.

    The file has optional ``defaults`` (replica keys) and a ``replicas`` list; flags given on the
    command line (``base``, ``pool``) are the defaults under the file's; the file's ``pool`` is the
    fleet's shared pool. Without a file, ``replicas`` copies of
    ``base`` named ``r1..rN`` on consecutive ports from ``base_port`` (or all on free ports with 0).
    """
    raw_replicas: list[dict[str, Any]] = []
    defaults = base
    if path is not None:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        unknown = sorted(set(document) - {"defaults", "replicas", "host", "pool"})
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
        if "host" in document:
            host = str(document["host"])
        if "pool" in document:
            pool = pool_from(document["pool"], str(path))
        if "defaults" in document:
            if not isinstance(document["defaults"], dict):
                raise ConfigError(f"{path}: defaults must be a mapping")
            defaults = _replica_from(document["defaults"], base, f"{path}: defaults")
        listed = document.get("replicas", [])
        if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
            raise ConfigError(f"{path}: replicas must be a list of mappings")
        raw_replicas = listed
    count = replicas if replicas is not None else (len(raw_replicas) or 1)
    if count < 1:
        raise ConfigError("--replicas must be at least 1")
    if raw_replicas and replicas is not None and replicas != len(raw_replicas):
        raise ConfigError(f"--replicas {replicas} but the config lists {len(raw_replicas)} replicas")
    specs: list[ReplicaSpec] = []
    for index in range(count):
        port = 0 if not base_port else base_port + index
        spec = replace(defaults, name=f"r{index + 1}", port=port, seed=base.seed * 1000 + index)
        if raw_replicas:
            spec = _replica_from(raw_replicas[index], spec, f"replica {index + 1}")
        specs.append(spec)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError("replica names must be unique")
    ports = [spec.port for spec in specs if spec.port]
    if len(set(ports)) != len(ports):
        raise ConfigError("replica ports must be unique")
    return FleetConfig(host=host, replicas=tuple(specs), pool=pool)
