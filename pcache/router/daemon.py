"""The router daemon: composes config, state, fleet, policy, watcher, proxy and admin API.

Both listeners (data plane and admin API) run as uvicorn servers (uvloop + httptools) on one
event loop in one process. Sockets are bound before serving so that port 0 works: the daemon
prints ``data URL``, ``admin URL`` and then ``ready`` on stdout once both accept connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx
import uvicorn

from pcache.fleet import Fleet
from pcache.kv.events import EventsEndpoint
from pcache.kv.hub import KvEventsHub
from pcache.kv.local_tokenizer import LocalTokenizer, TokenizerError
from pcache.kv.tokenize_client import EngineTokenize
from pcache.ledger import Ledger
from pcache.policy.base import SharesHomes
from pcache.router.actions import OperatorActions
from pcache.router.admin import build_admin_app
from pcache.router.checks import prepare
from pcache.router.config import ConfigError, RouterConfig, split_host_port
from pcache.router.coordinator import Coordinator
from pcache.router.events import EventLog
from pcache.router.home_share import HomeShare
from pcache.router.membership import Membership
from pcache.router.metrics import RouterMetrics
from pcache.router.offload import LoopLag, RequestParser
from pcache.router.outlier import OutlierDetector
from pcache.router.proxy import ProxyApp
from pcache.router.routing import Routing
from pcache.router.security import AdminGuard, admin_token, open_doors
from pcache.router.server import connection_limit, raise_fd_limit, server_settings
from pcache.router.state_sync import StoreSync
from pcache.router.upstream import make_upstream
from pcache.router.watcher import FleetWatcher
from pcache.state import StateError, open_store, reset_store

__all__ = ["RouterDaemon", "run"]

log = logging.getLogger("pcache.router")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the daemon (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(address: str) -> socket.socket:
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _outlier_detector(config: RouterConfig) -> OutlierDetector | None:
    outlier = config.outlier
    if not outlier.consecutive_failures:
        return None
    return OutlierDetector(
        consecutive_failures=outlier.consecutive_failures,
        base_ejection_s=outlier.base_ejection_s,
        max_ejection_s=outlier.max_ejection_s,
        max_ejected_fraction=outlier.max_ejected_fraction,
    )


class RouterDaemon:
    """Everything the router runs, wired together. ``serve()`` runs until stopped."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        prepared = prepare(config)  # the checks `router check-config` makes
        self.token, self.token_file = admin_token(config)
        self.fingerprint_config = prepared.fingerprint
        self.policy = prepared.policy
        try:
            self.store = open_store(config.state_location())
        except StateError as exc:
            raise ConfigError(f"state: {exc}") from exc
        self.started_at = time.time()
        self.metrics = RouterMetrics()
        self.ledger = Ledger(hot_min_sessions=config.hot_prefixes.min_sessions)
        self.fleet = Fleet(
            failure_threshold=config.health.failures,
            recovery_threshold=config.health.recoveries,
            on_drained=self._drained,
        )
        self.routing = Routing(
            policy=self.policy,
            fleet=self.fleet,
            config=self.fingerprint_config,
            ledger=self.ledger,
            metrics=self.metrics,
        )
        self._start_kv_events(config)
        up = config.upstream
        self.upstream = make_upstream(
            up.client,
            connect_timeout_s=up.connect_timeout_s,
            read_timeout_s=up.read_timeout_s,
            max_connections=up.max_connections,
        )
        self.watcher = FleetWatcher(
            fleet=self.fleet,
            upstream=self.upstream,
            ledger=self.ledger,
            health=config.health,
            scrape=config.scrape,
        )
        self.actions = OperatorActions(
            config=config,
            store=self.store,
            fleet=self.fleet,
            routing=self.routing,
            watcher=self.watcher,
            upstream=self.upstream,
        )
        self.state_sync = StoreSync(self.actions)
        self.membership = Membership(store=self.store, fleet=self.fleet, ledger=self.ledger)
        self.homes: HomeShare | None = None
        self.coordinator: Coordinator | None = None
        if self.store.shared:
            self.coordinator = Coordinator(store=self.store, fleet=self.fleet, membership=self.membership)
        if self.store.shared and isinstance(self.policy, SharesHomes):
            self.homes = HomeShare(store=self.store, policy=self.policy, origin=self.membership.id)
            self.routing.on_new_home = self.homes.note
        self.parser = RequestParser(threshold_bytes=config.server.offload_bytes)
        self.loop_lag = LoopLag()
        self.proxy = ProxyApp(
            routing=self.routing,
            fleet=self.fleet,
            upstream=self.upstream,
            metrics=self.metrics,
            retries=up.retries,
            retry_on_timeout=up.retry_on_timeout,
            api_keys=config.api_keys(),
            max_body_bytes=up.max_body_bytes,
            max_response_bytes=up.max_response_bytes,
            body_timeout_s=config.server.body_timeout_s,
            parser=self.parser,
            outlier=_outlier_detector(config),
            on_metrics=self._refresh_metrics,
        )
        self.url = ""
        self.admin_url = ""
        self.events = EventLog()
        self.admin = AdminGuard(build_admin_app(self), max_body_bytes=config.admin.max_body_bytes)
        self._servers: list[_Server] = []
        self._background: set[asyncio.Task[None]] = set()

    def _start_kv_events(self, config: RouterConfig) -> None:
        """Subscribe to the KV events of every replica that has them: the precise index."""
        with_events = [r for r in config.replicas if r.kv_events is not None]
        if not with_events:
            return
        hub = KvEventsHub(
            medium_weights=config.kv.medium_weights,
            stale_after_s=config.health.interval_s,
            max_blocks=config.kv.max_blocks_per_replica,
        )
        try:
            for replica in with_events:
                assert replica.kv_events is not None
                events = replica.kv_events
                host = httpx.URL(replica.url).host
                hub.add(
                    replica.name, EventsEndpoint(events.endpoint, events.replay_endpoint, events.topic), host
                )
        except OSError as exc:
            hub.close()
            raise ConfigError(f"kv_events: {exc}") from exc
        self.routing.kv = hub
        self.routing.tokenize = EngineTokenize(config.kv.tokenize_timeout_s)
        for model, directory in config.tokenizers.items():
            try:
                self.routing.tokenizers[model] = LocalTokenizer(Path(config.base_dir) / directory)
            except TokenizerError as exc:
                hub.close()
                raise ConfigError(f"tokenizers.{model}: {exc}") from exc
        if hasattr(self.policy, "precise"):
            self.policy.precise = hub

    def _refresh_metrics(self) -> None:
        self.metrics.refresh(self.fleet, self.ledger)
        self.metrics.loop_lag.set(self.loop_lag.worst_lag())
        self.metrics.loop_stall.set(self.loop_lag.worst_stall())

    def _drained(self, name: str) -> None:
        log.info("replica %s drained", name)
        task = asyncio.get_running_loop().create_task(self._record_drained(name))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record_drained(self, name: str) -> None:
        try:
            await self.actions.record_drained(name)
        except StateError as exc:  # the drain itself stands; a restart finds it draining, so drained
            log.warning("could not record that %s is drained: %s", name, exc.message)

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True

    async def serve(
        self,
        data_sock: socket.socket | None = None,
        admin_sock: socket.socket | None = None,
        *,
        worker: int | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Serve until stopped. With no sockets given, bind both listeners and announce them on
        stdout; a worker of ``--workers`` gets its data socket (and worker 0 the admin socket) and
        calls ``on_ready`` instead (its parent announces the fleet of workers)."""
        try:
            await self.actions.restore()
        except StateError as exc:
            await self.store.close()
            raise ConfigError(f"state: {exc.message}") from exc
        self.events.watch_fleet(self.fleet)  # the restored states are the baseline
        if self.homes is not None:
            await self.homes.subscribe()
        if worker is None:
            data_sock, admin_sock = _bind(self.config.listen), _bind(self.config.admin.listen)
        assert data_sock is not None
        self.url = _url(data_sock)
        self.admin_url = _url(admin_sock) if admin_sock is not None else ""
        if worker is not None:
            self.membership.id += f"/w{worker}"
        self.membership.url, self.membership.admin_url = self.url, self.admin_url
        fd_limit = raise_fd_limit()
        limit = connection_limit(self.config.server, fd_limit, self.config.upstream.max_connections)
        common = server_settings(self.config.server, limit)
        log.info("open files limit %d: at most %d client connections per listener", fd_limit, limit)
        self._servers = [_Server(uvicorn.Config(self.proxy, **common))]
        if admin_sock is not None:
            self._servers.append(_Server(uvicorn.Config(self.admin, **common)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        # Everything built so far lives as long as the daemon: keep the cyclic GC from rescanning it
        # on every collection (collections otherwise cost more as in-flight requests pile up).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        self.watcher.start()
        self.state_sync.start()
        self.membership.start()
        if self.homes is not None:
            self.homes.start()
        if self.coordinator is not None:
            self.coordinator.start()
        self.loop_lag.start()
        listening = [data_sock] if admin_sock is None else [data_sock, admin_sock]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, listening, strict=True)
        ]
        while not all(s.started for s in self._servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        if on_ready is not None and all(s.started for s in self._servers):
            on_ready()
        elif all(s.started for s in self._servers):
            print(f"data {self.url}", flush=True)
            print(f"admin {self.admin_url}", flush=True)
            print("ready", flush=True)
            log.info("router ready: data plane %s, admin API %s", self.url, self.admin_url)
            if self.token_file is not None:
                log.info(
                    "admin token (generated, owner-only) in %s; local CLI and console use it", self.token_file
                )
            for door in open_doors(self.config):
                log.warning("open: %s", door)
        try:
            await asyncio.gather(*tasks)
        finally:
            self.stop()
            if self.coordinator is not None:
                await self.coordinator.stop()
            if self.homes is not None:
                await self.homes.stop()
            await self.membership.stop()
            self.parser.stop()
            await self.loop_lag.stop()
            await self.state_sync.stop()
            await self.actions.stop()
            await self.watcher.stop()
            await self.upstream.aclose()
            if self.routing.kv is not None:
                self.routing.kv.close()
            if self.routing.tokenize is not None:
                await self.routing.tokenize.aclose()
            await self.store.close()


def run(config: RouterConfig, *, reset_state: bool = False, workers: int = 1) -> None:
    """Build the daemon and serve until SIGINT/SIGTERM, on uvloop when available.

    ``reset_state`` starts over on purpose: the state file is moved aside (or a shared store's keys
    deleted) first, so a state file refused as corrupt does not stop the router. ``workers`` > 1
    runs that many data-plane processes on one port (:mod:`pcache.router.workers`).
    """
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from pcache.router.log_once import install as log_process_lines_once

    log_process_lines_once()  # two uvicorn servers in this process: their start/stop lines once
    if reset_state:
        try:
            log.warning("%s", asyncio.run(reset_store(config.state_location())))
        except (StateError, OSError, ValueError) as exc:
            raise ConfigError(f"state: cannot reset {config.state_location()}: {exc}") from exc
    if workers > 1:
        from pcache.router.workers import run_workers

        run_workers(config, workers)
        return
    daemon = RouterDaemon(config)
    try:
        import uvloop
    except ImportError:
        asyncio.run(daemon.serve())
    else:
        uvloop.run(daemon.serve())
