"""`pcache sim`: run simulated vLLM replicas on loopback for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pcache_cli.common import ExitCode, fail


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command(rich_help_panel="Run")(sim)


def sim(
    replicas: Annotated[
        int | None, typer.Option("--replicas", "-n", help="Number of replicas (default 1, or the config's).")
    ] = None,
    base_port: Annotated[
        int, typer.Option("--base-port", help="Port of r1; r2 gets the next one. 0 = OS-chosen free ports.")
    ] = 8101,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Fleet YAML (per-replica name, port, cache, speed, faults)."),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Served model name.")] = "sim-model",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the injected-fault draws.")] = 0,
    num_gpu_blocks: Annotated[
        int, typer.Option("--num-gpu-blocks", help="KV cache capacity in blocks.")
    ] = 4096,
    block_size: Annotated[int, typer.Option("--block-size", help="Tokens per KV block.")] = 16,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", help="Concurrent running requests.")] = 64,
    max_model_len: Annotated[int, typer.Option("--max-model-len", help="Context length in tokens.")] = 32768,
    max_tokens: Annotated[
        int, typer.Option("--default-max-tokens", help="Tokens generated when a request gives no max_tokens.")
    ] = 16,
    t0_ms: Annotated[float, typer.Option("--t0-ms", help="Fixed prefill cost per request (ms).")] = 2.0,
    per_token_us: Annotated[
        float, typer.Option("--per-token-us", help="Prefill cost per uncached prompt token (µs).")
    ] = 20.0,
    inter_token_ms: Annotated[
        float, typer.Option("--inter-token-ms", help="Time between generated tokens (ms).")
    ] = 1.0,
    chars_per_token: Annotated[
        float,
        typer.Option(
            "--chars-per-token",
            help="Characters per token of the stand-in tokenizer (1-16; real BPE ~2.4-3.2).",
        ),
    ] = 4.0,
    host_blocks: Annotated[
        int,
        typer.Option("--host-blocks", help="Per replica a host-DRAM KV tier of this many blocks (0 = none)."),
    ] = 0,
    host_load_us_per_token: Annotated[
        float, typer.Option("--host-load-us-per-token", help="Loading one token's KV from host DRAM (µs).")
    ] = 2.0,
    pool_blocks: Annotated[
        int,
        typer.Option("--pool-blocks", help="A KV pool of this many blocks shared by the fleet (0 = none)."),
    ] = 0,
    pool_latency_ms: Annotated[
        float,
        typer.Option("--pool-latency-ms", help="Latency of each request that loads from the pool (ms)."),
    ] = 10.0,
    pool_per_token_us: Annotated[
        float, typer.Option("--pool-per-token-us", help="Loading one token's KV from the pool (µs).")
    ] = 2.0,
    dev_mode: Annotated[
        bool,
        typer.Option(
            "--dev-mode",
            envvar="VLLM_SERVER_DEV_MODE",
            help="Serve /reset_prefix_cache (vLLM answers 404 unless VLLM_SERVER_DEV_MODE=1).",
        ),
    ] = False,
) -> None:
    """Run N vLLM-like replicas (r1..rN); prints `replica NAME URL` lines, then `ready`.

    Examples:

      pcache sim -n 3

      pcache sim -n 4 --base-port 9000 --num-gpu-blocks 512
    """
    from pcache.sim.config import ConfigError
    from pcache.sim.launch import SimOptions, fleet_config
    from pcache.sim.server import run_fleet

    options = SimOptions(
        replicas=replicas,
        base_port=base_port,
        host=host,
        config=config,
        model=model,
        seed=seed,
        num_gpu_blocks=num_gpu_blocks,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        default_max_tokens=max_tokens,
        t0_ms=t0_ms,
        per_token_us=per_token_us,
        inter_token_ms=inter_token_ms,
        dev_mode=dev_mode,
        chars_per_token=chars_per_token,
        host_blocks=host_blocks,
        host_load_us_per_token=host_load_us_per_token,
        pool_blocks=pool_blocks,
        pool_latency_ms=pool_latency_ms,
        pool_per_token_us=pool_per_token_us,
    )
    try:
        fleet = fleet_config(options)
    except ConfigError as exc:
        fail(str(exc), ExitCode.USAGE)
    try:
        run_fleet(fleet)
    except OSError as exc:
        fail(str(exc))
