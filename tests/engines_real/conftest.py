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
    ``router.url``, ``router.admin_url``, ``router.config_path``. A test that needs another config
    builds its own: ``with make_router(fleet, tmp_path, tier1=[...], prewarm={...}) as router``
    (``tests.engines_real.stack``).
``pcache_cli`` (function)
    ``pcache_cli(*args)`` runs the real ``pcache`` CLI against ``router`` and returns the completed
    process (stdout, stderr, returncode); ``cli_runner(router, home)`` makes one for any router.

Requests and prose: ``tests.engines_real.traffic`` (``chat``, ``complete``, ``stream_chat`` return
the serving replica and the engine's ``cached_tokens``; ``prose(seed, chars)``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines_real.engine import EngineStartError, VllmEngine
from tests.engines_real.stack import Cli, EnginePair, cli_runner, make_router
from tests.harness.router import RouterProcess

HERE = Path(__file__).resolve().parent
CACHE_ROOT = Path(os.environ.get("PCACHE_CACHE_DIR", Path.home() / ".cache" / "pcache"))


_ENGINE_STARTS: list[str] = []  # "e1 healthy after 41.2 s", for the terminal summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ENGINE_STARTS:
        terminalreporter.write_line("real engines: " + "; ".join(_ENGINE_STARTS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.real_engine)
            item.add_marker(pytest.mark.timeout(900))


def _run(command: list[str], what: str, timeout_s: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} timed out after {timeout_s:.0f}s", pytrace=False)
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
        _ENGINE_STARTS.extend(f"{e.name} healthy after {e.ready_after_s:.1f} s" for e in pair.all)
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
    with make_router(fleet, tmp_path / "router") as process:
        yield process


@pytest.fixture
def pcache_cli(router: RouterProcess, tmp_path: Path) -> Cli:
    return cli_runner(router, tmp_path / "xdg")
