"""The real-engine suite's building blocks, importable by tests: the engine pair, a router in front
of it with any config, and the real ``pcache`` CLI against a router."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.engines_real.engine import VllmEngine
from tests.harness.router import RouterProcess

__all__ = ["ENGINE_START_TIMEOUT_S", "Cli", "EnginePair", "cli_runner", "make_router"]

ENGINE_START_TIMEOUT_S = float(os.environ.get("PCACHE_ENGINE_START_TIMEOUT_S", "420"))
Cli = Callable[..., subprocess.CompletedProcess[str]]


@dataclass
class EnginePair:
    """The suite's two engines, by name."""

    e1: VllmEngine
    e2: VllmEngine

    @property
    def all(self) -> tuple[VllmEngine, VllmEngine]:
        return (self.e1, self.e2)

    def __getitem__(self, name: str) -> VllmEngine:
        return {engine.name: engine for engine in self.all}[name]

    @property
    def urls(self) -> dict[str, str]:
        return {engine.name: engine.url for engine in self.all}

    def counters(self, name: str) -> dict[str, float]:
        """One metric on each engine: ``{"e1": ..., "e2": ...}``."""
        return {engine.name: engine.counter(name) for engine in self.all}

    def ensure_ready(self) -> None:
        """Restart whatever is down, in parallel, and wait until both are healthy."""
        down = [engine for engine in self.all if not engine.alive()]
        for engine in down:
            engine.stop()  # reap what is left of its group before rebinding its ports
            engine.start()
        with ThreadPoolExecutor(len(self.all)) as pool:
            list(pool.map(lambda engine: engine.wait_ready(ENGINE_START_TIMEOUT_S), self.all))


def make_router(fleet: EnginePair, state_dir: Path, **config: Any) -> RouterProcess:
    """A (not yet started) router in front of both engines: fast health checks and scrapes, the
    default policy and upstream client; ``config`` adds or overrides top-level sections."""
    settings: dict[str, Any] = {
        "health": {"interval_s": 0.5, "timeout_s": 2.0, "failures": 2, "recoveries": 1},
        "scrape": {"interval_s": 0.5, "timeout_s": 3.0},
        "startup_timeout_s": 90.0,  # a router starts in seconds, but the engines load the cores
        **config,
    }
    return RouterProcess(replicas=fleet.urls, state_dir=state_dir, **settings)


def cli_runner(router: RouterProcess, home: Path) -> Cli:
    """``run(*args)``: the real ``pcache`` CLI against ``router``, in a clean settings home."""

    def run(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ,
            PCACHE_ROUTER=router.admin_url,
            PCACHE_ADMIN_TOKEN=router.token or "",
            NO_COLOR="1",
            PCACHE_CONFIG="",
            PCACHE_OUTPUT="",
            XDG_CONFIG_HOME=str(home),
        )
        return subprocess.run(
            [sys.executable, "-m", "pcache_cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )

    return run
