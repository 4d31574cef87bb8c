"""``pcache router serve --workers N``: N data-plane processes on one port, sharing the state store.

Each worker is a whole router in a fresh interpreter (its own event loop, fleet view, policy and
upstream pool) with its own listening socket on the same address (``SO_REUSEPORT``: the kernel
spreads new connections over them), so one machine's cores all serve traffic. Worker 0 also serves
the admin API, on a socket the parent binds and hands down. The workers share the operator state
through the store (a sqlite file or Redis: every worker reloads within a second when another one
writes) and, on Redis, session homes and load as separate routers do; ``GET /api/v1/routers``
lists each as ``host:pid/wN``.

The parent checks the store once (a refused state file stops it with one line, and a new file is
created before the workers race to), reserves the port (bound, never listening, so it takes no
connections), starts the workers, prints ``data``/``admin``/``ready`` once every worker accepts
connections, restarts a worker that dies, and passes SIGTERM/SIGINT on to all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from pcache.router.config import ConfigError, RouterConfig, split_host_port
from pcache.router.daemon import RouterDaemon, _bind, _url
from pcache.state import StateError, open_store

__all__ = ["run_workers"]

log = logging.getLogger("pcache.router.workers")


def _reuseport_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    if listen:
        sock.listen(2048)
        sock.setblocking(False)
    return sock


async def _prepare_store(config: RouterConfig) -> None:
    """Open the store once before the workers start: a state file is checked (one line if refused)
    and created with its schema here, so workers starting together never race to create it."""
    try:
        store = open_store(config.state_location())
        await store.version()
    except StateError as exc:
        raise ConfigError(f"state: {exc.message}") from exc
    await store.close()


class _Workers:
    """The parent's view of its workers."""

    def __init__(self, config: RouterConfig, count: int) -> None:
        self.config = config
        self.count = count
        host, port = split_host_port(config.listen)
        self.reserved = _reuseport_socket(host, port, listen=False)  # holds the port, takes nothing
        self.port: int = self.reserved.getsockname()[1]
        self.admin_sock = _bind(config.admin.listen)
        self.admin_sock.setblocking(True)
        self.processes: list[subprocess.Popen[str] | None] = [None] * count
        self.stopping = False

    def spawn(self, index: int) -> subprocess.Popen[str]:
        admin_fd = self.admin_sock.fileno() if index == 0 else -1
        process = subprocess.Popen(
            [sys.executable, "-m", "pcache.router.workers", str(index), str(self.port), str(admin_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(admin_fd,) if admin_fd >= 0 else (),
        )
        assert process.stdin is not None
        process.stdin.write(self.config.model_dump_json())
        process.stdin.close()
        self.processes[index] = process
        return process

    def stop(self, *_: object) -> None:
        self.stopping = True
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def wait_ready(self, process: subprocess.Popen[str], index: int) -> None:
        """Until the worker says ``ready``; its ``error ...`` line (or its exit) is a ConfigError."""
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise ConfigError(line.removeprefix("error ") if line else f"worker {index} exited")

    def supervise(self) -> None:
        """Until stopped: restart a worker that died (a crash must not shrink the machine's share)."""
        while not self.stopping:
            time.sleep(0.5)
            for index, process in enumerate(self.processes):
                if process is not None and process.poll() is not None and not self.stopping:
                    log.warning("worker %d exited with %s; starting it again", index, process.returncode)
                    self.wait_ready(self.spawn(index), index)
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def run_workers(config: RouterConfig, count: int) -> None:
    """Serve with ``count`` worker processes until SIGINT/SIGTERM."""
    if config.state_location() in ("memory://", ":memory:"):
        raise ConfigError(
            "--workers needs a state store the workers share: set state to a file path or redis://... "
            "(memory:// lives in one process)"
        )
    asyncio.run(_prepare_store(config))
    workers = _Workers(config, count)
    signal.signal(signal.SIGTERM, workers.stop)
    signal.signal(signal.SIGINT, workers.stop)
    started = [workers.spawn(index) for index in range(count)]
    for index, process in enumerate(started):
        workers.wait_ready(process, index)
    host, _ = split_host_port(config.listen)
    data_url = f"http://[{host}]:{workers.port}" if ":" in host else f"http://{host}:{workers.port}"
    print(f"data {data_url}", flush=True)
    print(f"admin {_url(workers.admin_sock)}", flush=True)
    print("ready", flush=True)
    log.info("router ready with %d workers: data plane %s", count, data_url)
    workers.supervise()


def _worker_main(argv: list[str]) -> int:
    """One worker (``python -m pcache.router.workers INDEX PORT ADMIN_FD``, config JSON on stdin)."""
    parser = argparse.ArgumentParser(prog="pcache.router.workers")
    parser.add_argument("index", type=int)
    parser.add_argument("port", type=int)
    parser.add_argument("admin_fd", type=int)
    args = parser.parse_args(argv)
    config = RouterConfig.model_validate_json(sys.stdin.read())
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[w{args.index}]: %(message)s",
        stream=sys.stderr,
    )
    announce = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # stdout is the line to the parent: only "ready" or "error ..."

    def ready() -> None:
        print("ready", file=announce, flush=True)

    try:
        host, _ = split_host_port(config.listen)
        data_sock = _reuseport_socket(host, args.port, listen=True)
        admin_sock = None
        if args.admin_fd >= 0:
            admin_sock = socket.socket(fileno=args.admin_fd)
            admin_sock.setblocking(False)
        daemon = RouterDaemon(config)
        serving = daemon.serve(data_sock, admin_sock, worker=args.index, on_ready=ready)
        try:
            import uvloop
        except ImportError:
            asyncio.run(serving)
        else:
            uvloop.run(serving)
    except ConfigError as exc:
        print(f"error {exc}", file=announce, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
