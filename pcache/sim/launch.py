"""Start a simulated fleet from options: ``python -m pcache.sim`` and ``pcache sim`` share this.

``SimOptions`` holds the command-line settings, ``fleet_config`` checks them and builds the fleet
(a ``ConfigError`` says what is wrong), and ``main`` is the standalone entry point, so the engine's
own tools (demo, test launchers) start the simulator without the CLI package.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from pcache.sim.config import ConfigError, FaultSettings, FleetConfig, ReplicaSpec, Timing, load_fleet_config
from pcache.sim.tiers import PoolSpec

__all__ = ["SimOptions", "fleet_config", "main"]


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What ``pcache sim`` takes on its command line (timings in ms and µs, as typed)."""

    replicas: int | None = None
    base_port: int = 8101
    host: str = "127.0.0.1"
    config: Path | None = None
    model: str = "sim-model"
    seed: int = 0
    num_gpu_blocks: int = 4096
    block_size: int = 16
    max_num_seqs: int = 64
    max_model_len: int = 32768
    default_max_tokens: int = 16
    t0_ms: float = 2.0
    per_token_us: float = 20.0
    inter_token_ms: float = 1.0
    chars_per_token: float = 4.0  # the stand-in tokenizer's width (a real byte-level BPE: ~2.4-3.2)
    dev_mode: bool = False  # serve /reset_prefix_cache, as vLLM does only under VLLM_SERVER_DEV_MODE=1
    host_blocks: int = 0  # per replica a host-DRAM KV tier of this many blocks (0 = none)
    host_load_us_per_token: float = 2.0  # loading one token's KV from host DRAM (µs)
    pool_blocks: int = 0  # a shared pool of this many blocks for the whole fleet (0 = none)
    pool_latency_ms: float = 10.0  # per request that loads from the pool (ms)
    pool_per_token_us: float = 2.0  # per token loaded from the pool (µs)


def fleet_config(options: SimOptions) -> FleetConfig:
    """The fleet ``options`` describe, or a ``ConfigError`` naming the flag that is wrong."""
    for flag, value in (
        ("--num-gpu-blocks", options.num_gpu_blocks),
        ("--block-size", options.block_size),
        ("--max-num-seqs", options.max_num_seqs),
        ("--max-model-len", options.max_model_len),
        ("--default-max-tokens", options.default_max_tokens),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1")
    if min(options.t0_ms, options.per_token_us, options.inter_token_ms) < 0:
        raise ConfigError("timings must not be negative")
    if not 1.0 <= options.chars_per_token <= 16.0:
        raise ConfigError("--chars-per-token must be between 1 and 16")
    if min(options.host_blocks, options.pool_blocks) < 0:
        raise ConfigError("--host-blocks and --pool-blocks must not be negative")
    if min(options.host_load_us_per_token, options.pool_latency_ms, options.pool_per_token_us) < 0:
        raise ConfigError("tier load costs must not be negative")
    if not 0 <= options.base_port <= 65535:
        raise ConfigError("--base-port must be between 0 and 65535")
    base = ReplicaSpec(
        name="r1",
        model=options.model,
        block_size=options.block_size,
        num_gpu_blocks=options.num_gpu_blocks,
        max_num_seqs=options.max_num_seqs,
        max_model_len=options.max_model_len,
        default_max_tokens=options.default_max_tokens,
        timing=Timing(
            t0=options.t0_ms / 1e3,
            per_prompt_token=options.per_token_us / 1e6,
            inter_token=options.inter_token_ms / 1e3,
        ),
        faults=FaultSettings(),
        seed=options.seed,
        dev_mode=options.dev_mode,
        chars_per_token=options.chars_per_token,
        host_blocks=options.host_blocks,
        host_per_token=options.host_load_us_per_token / 1e6,
    )
    pool = (
        PoolSpec(options.pool_blocks, options.pool_latency_ms / 1e3, options.pool_per_token_us / 1e6)
        if options.pool_blocks
        else None
    )
    fleet = load_fleet_config(
        options.config,
        replicas=options.replicas,
        base_port=options.base_port,
        host=options.host,
        base=base,
        pool=pool,
    )
    if any(spec.port > 65535 for spec in fleet.replicas):
        raise ConfigError("ports run past 65535; lower --base-port")
    return fleet


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pcache.sim",
        description="Run N vLLM-like replicas (r1..rN); prints `replica NAME URL` lines, then `ready`.",
    )
    defaults = SimOptions()
    parser.add_argument("--replicas", "-n", type=int, help="number of replicas (default 1, or the config's)")
    parser.add_argument("--config", "-c", type=Path, help="fleet YAML (per-replica name, port, cache, ...)")
    parser.add_argument(
        "--dev-mode",
        action="store_true",
        default=os.environ.get("VLLM_SERVER_DEV_MODE") == "1",
        help="serve /reset_prefix_cache (vLLM answers 404 unless VLLM_SERVER_DEV_MODE=1)",
    )
    for option in fields(SimOptions):
        if option.name in ("replicas", "config", "dev_mode"):
            continue
        default = getattr(defaults, option.name)
        parser.add_argument(
            f"--{option.name.replace('_', '-')}",
            type=type(default),
            default=default,
            help=f"default {default}",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fleet until SIGINT/SIGTERM; 2 on bad options, 1 if a port cannot be bound."""
    from pcache.sim.server import run_fleet

    arguments = vars(_parser().parse_args(argv))
    try:
        fleet = fleet_config(SimOptions(**arguments))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run_fleet(fleet)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
