"""The real-engine suite: two real vLLM engines (CPU build, tiny local model) judge the router.

Run it with ``python -m pytest -q -m real_engine tests/engines_real`` (``.ci/run`` does, after the
main suite; the plain ``python -m pytest -q`` deselects it: it needs vLLM and a few minutes). Every
test here is marked ``real_engine`` and gets a long timeout (the first one pays for engine start).
Nothing skips: an engine that cannot be installed or started fails the suite.

Fixtures (all real processes on loopback):

``vllm_python`` (session)
    The vLLM environment's python, from ``install_vllm.sh`` (reused when its marker says it is
    complete, built from scratch otherwise; ``PCACHE_VLLM_ENV`` moves it).
``tiny_model`` (session)
    Directory of the local tiny Llama (``build_tiny_model.py``, cached under
    ``$PCACHE_MODEL_CACHE`` or ``~/.cache/pcache/models`` by the builder's content hash).
``engines`` (session)
    An :class:`EnginePair`: two :class:`~tests.engines_real.engine.VllmEngine` s, ``e1`` on core 0
    and ``e2`` on core 1, started in parallel. Each has ``.url``, ``.name``, ``.kv_events``
    (``endpoint`` an ipc:// path the engine binds, ``replay_endpoint``, ``topic``), ``.metrics()``,
    ``.counter(name)``, ``.cache_config()``, ``.reset_prefix_cache()``, ``.kill()`` (SIGKILL of its
    process group), ``.start().wait_ready()``. Model name :data:`MODEL_NAME`, block size 128,
    48 KV blocks (6,144 tokens) per engine so eviction happens, ``--max-model-len 2048``.
``fleet`` (function)
    The same pair made ready for one test: any engine a previous test killed is restarted, both
    are healthy, both prefix caches are empty. Use it (not ``engines``) in tests.
``router`` (function)
    A real ``pcache router serve`` process (:class:`tests.harness.router.RouterProcess`) in front of
    ``fleet`` with the default config (tiered policy, aiohttp upstream), replicas named ``e1`` and
    ``e2``, fast health checks and scrapes. ``router.openai()``, ``router.admin()``,
    ``router.url``, ``router.admin_url``, ``router.config_path``.
``pcache_cli`` (function)
    ``pcache_cli(*args)`` runs the real ``pcache`` CLI against ``router`` and returns the completed
    process (stdout, stderr, returncode).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engines_real.engine import MODEL_NAME, EngineStartError, VllmEngine
from tests.harness.router import RouterProcess

HERE = Path(__file__).resolve().parent
ENGINE_START_TIMEOUT_S = float(os.environ.get("PCACHE_ENGINE_START_TIMEOUT_S", "420"))
CACHE_ROOT = Path(os.environ.get("PCACHE_CACHE_DIR", Path.home() / ".cache" / "pcache"))

__all__ = ["MODEL_NAME", "EnginePair"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.real_engine)
            item.add_marker(pytest.mark.timeout(900))


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


def _run(command: list[str], what: str, timeout_s: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} timed out after {timeout_s:.0f}s: {exc.stderr}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stderr[-4000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def vllm_python() -> str:
    return _run(["bash", str(HERE / "install_vllm.sh")], "installing vLLM (install_vllm.sh)", 1800)


@pytest.fixture(scope="session")
def tiny_model(vllm_python: str) -> Path:
    models = Path(os.environ.get("PCACHE_MODEL_CACHE", CACHE_ROOT / "models"))
    built = _run(
        [vllm_python, str(HERE / "build_tiny_model.py"), str(models)], "building the tiny model", 600
    )
    return Path(built)


@pytest.fixture(scope="session")
def engines(
    vllm_python: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnginePair]:
    work = tmp_path_factory.mktemp("engines")
    pair = EnginePair(
        *(
            VllmEngine(
                name,
                python=vllm_python,
                model_dir=tiny_model,
                work_dir=work,
                core=core,
                cache_root=CACHE_ROOT / "vllm-cache-root",
            )
            for core, name in enumerate(("e1", "e2"))
        )
    )
    try:
        for engine in pair.all:
            engine.start()
        try:
            pair.ensure_ready()
        except EngineStartError as exc:
            pytest.fail(f"a real engine did not start: {exc}", pytrace=False)
        yield pair
    finally:
        for engine in pair.all:
            engine.stop()


@pytest.fixture
def fleet(engines: EnginePair) -> EnginePair:
    try:
        engines.ensure_ready()
    except EngineStartError as exc:
        pytest.fail(f"a real engine did not restart: {exc}", pytrace=False)
    for engine in engines.all:
        engine.reset_prefix_cache()
    return engines


@pytest.fixture
def router(fleet: EnginePair, tmp_path: Path) -> Iterator[RouterProcess]:
    with RouterProcess(
        replicas=fleet.urls,
        state_dir=tmp_path / "router",
        health={"interval_s": 0.5, "timeout_s": 2.0, "failures": 2, "recoveries": 1},
        scrape={"interval_s": 0.5, "timeout_s": 3.0},
    ) as process:
        yield process


@pytest.fixture
def pcache_cli(router: RouterProcess, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ,
            PCACHE_ROUTER=router.admin_url,
            PCACHE_ADMIN_TOKEN=router.token or "",
            NO_COLOR="1",
            PCACHE_CONFIG="",
            PCACHE_OUTPUT="",
            XDG_CONFIG_HOME=str(tmp_path / "xdg"),
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
