"""Run a fleet of simulated replicas in one asyncio loop, one uvicorn server per loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

import uvicorn

from pcache.sim.app import build_app, quiet_simulated_disconnects
from pcache.sim.config import FleetConfig
from pcache.sim.replica import SimReplica
from pcache.sim.tiers import SharedPool

__all__ = ["bind_socket", "run_fleet", "serve_fleet"]


class _SharedSignalServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the fleet (several share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket ourselves, so port 0 gets a free port with no race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_fleet(
    config: FleetConfig,
    *,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """Bind every replica, announce ``replica NAME URL`` lines then ``ready``, serve until ``stop``."""
    quiet_simulated_disconnects()
    stop = stop or asyncio.Event()
    sockets: list[socket.socket] = []
    try:
        for spec in config.replicas:
            sockets.append(bind_socket(config.host, spec.port))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        spec = config.replicas[len(sockets)]
        raise OSError(f"cannot bind {config.host}:{spec.port} for {spec.name}: {exc.strerror}") from None
    pool = SharedPool(config.pool) if config.pool is not None else None
    replicas = [SimReplica(spec, pool) for spec in config.replicas]
    servers: list[_SharedSignalServer] = []
    for replica in replicas:
        uv_config = uvicorn.Config(
            build_app(replica),
            loop="none",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            backlog=2048,
        )
        servers.append(_SharedSignalServer(uv_config))
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers, sockets, strict=True)
    ]
    try:
        while not all(server.started for server in servers):
            failed = [spec.name for spec, task in zip(config.replicas, tasks, strict=True) if task.done()]
            if failed:
                raise OSError(f"replica {failed[0]} failed to start")
            await asyncio.sleep(0.01)  # uvicorn's startup exposes a flag, not an event
        urls: dict[str, str] = {}
        for spec, sock in zip(config.replicas, sockets, strict=True):
            urls[spec.name] = _url(config.host, sock.getsockname()[1])
            print(f"replica {spec.name} {urls[spec.name]}", file=out)
        print("ready", file=out, flush=True)
        if on_ready is not None:
            on_ready(urls)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        for replica in replicas:
            replica.shutdown()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in sockets:
            sock.close()


def run_fleet(config: FleetConfig) -> None:
    """Serve ``config`` until SIGINT or SIGTERM, then stop cleanly (used by ``pcache sim``)."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is part of uvicorn[standard]
        runner = asyncio.Runner()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_fleet(config, stop=stop)

    with runner:
        runner.run(main())
