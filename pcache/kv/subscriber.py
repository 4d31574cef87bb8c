"""One replica's KV-event ingestion: a ZMQ subscriber thread with sequence tracking and replay.

The SUB socket does the opposite of the engine: it connects to an engine that binds (``*``, ``::``,
``ipc://``, ``inproc://``; a wildcard host is the replica's host) and binds an address the engine
connects to. A DEALER socket asks the engine's replay ROUTER for batches from a sequence number:

- on start, and whenever the subscriber comes back from stale: from 0 (all the engine still has);
- on a gap in the live sequence: from the first missing batch (live batches wait meanwhile);
- every ``probe_interval_s`` from the next expected batch: the end-of-replay answer is the
  engine's heartbeat (an idle engine publishes nothing), and any batch it returns was missed.

The subscriber is *live* while the engine answered within ``stale_after_s`` (without a replay
endpoint there is no heartbeat, and it stays live while running). A live sequence that goes
backwards is an engine restart: the replica's blocks are forgotten and rebuilt from replay. A stale
subscriber that comes back forgets and rebuilds too: the engine may have restarted meanwhile.
Decoding and indexing happen on this thread, never on the router's event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import zmq

from pcache.kv.events import END_SEQ, EventsEndpoint, decode_batch, engine_binds, pack_seq, unpack_seq
from pcache.kv.index import ReplicaBlocks

__all__ = ["KvEventSubscriber", "SubscriberStats", "subscriber_address"]

log = logging.getLogger(__name__)


def subscriber_address(endpoint: str, host: str) -> tuple[str, bool]:
    """Where the subscriber connects (True) or binds (False) for an engine ``endpoint``."""
    if not engine_binds(endpoint):
        return endpoint, False
    if endpoint.startswith(("ipc://", "inproc://")):
        return endpoint, True
    address = endpoint.replace("[::]", f"[{host}]" if ":" in host else host).replace("*", host)
    return address, True


def _replay_address(endpoint: str, host: str) -> str:
    target = host if ":" not in host else f"[{host}]"
    return endpoint.replace("[::]", target).replace("0.0.0.0", target).replace("*", target)


@dataclass(slots=True)
class SubscriberStats:
    """Counters of one subscriber (read by status; written by its thread only)."""

    batches: int = 0
    events: int = 0
    gaps: int = 0  # gaps in the live sequence
    replays: int = 0  # replay requests answered
    lost_batches: int = 0  # batches neither the live stream nor replay could give
    restarts: int = 0  # engine restarts detected (the sequence went backwards)
    decode_errors: int = 0
    apply_seconds: float = 0.0  # time spent decoding and indexing, on this thread


class KvEventSubscriber:
    """Feeds one replica's :class:`ReplicaBlocks` from its engine's KV events, on its own thread."""

    def __init__(
        self,
        replica: str,
        config: EventsEndpoint,
        host: str,
        blocks: ReplicaBlocks,
        *,
        probe_interval_s: float = 0.5,
        stale_after_s: float = 2.0,
    ) -> None:
        self.replica = replica
        self.config = config
        self.blocks = blocks
        self.probe_interval_s = probe_interval_s
        self.stale_after_s = stale_after_s
        self.stats = SubscriberStats()
        self.address, self.connects = subscriber_address(config.endpoint, host)
        self.replay_address = (
            _replay_address(config.replay_endpoint, host) if config.replay_endpoint is not None else None
        )
        self.last_seq: int | None = None
        self._last_live: int | None = None
        self._held: dict[int, bytes] = {}
        self._replay_sent = 0.0  # monotonic time of the outstanding replay request (0: none)
        self._answered = 0.0  # monotonic time the engine last answered or published
        self._was_live = False
        self._stop = threading.Event()
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sub = self._context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, config.topic.encode("utf-8"))
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        if self.connects:
            self._sub.connect(self.address)
        else:
            try:
                self._sub.bind(self.address)
            except zmq.ZMQError as exc:
                self._sub.close(linger=0)
                raise OSError(f"cannot bind {self.address} for {replica}'s KV events: {exc}") from None
        self._dealer: zmq.Socket[bytes] | None = None
        if self.replay_address is not None:
            self._dealer = self._context.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._dealer.connect(self.replay_address)
        self._thread = threading.Thread(target=self._run, name=f"kv-events-{replica}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sub.close(linger=0)
        if self._dealer is not None:
            self._dealer.close(linger=0)

    @property
    def live(self) -> bool:
        """Whether the index reflects the engine now (it answered within ``stale_after_s``)."""
        if not self._thread.is_alive():
            return False
        if self._dealer is None:
            return True
        return time.monotonic() - self._answered <= self.stale_after_s

    # ---- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        if self._dealer is not None:
            poller.register(self._dealer, zmq.POLLIN)
        self._request_replay(0)
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(timeout=min(100, int(self.probe_interval_s * 1000))))
                if self._sub in ready:
                    self._drain_live()
                if self._dealer is not None and self._dealer in ready:
                    self._drain_replay()
                self._probe()
            except zmq.ZMQError as exc:
                if self._stop.is_set():
                    return
                log.warning("KV events of %s: %s", self.replica, exc)
                time.sleep(self.probe_interval_s)

    def _probe(self) -> None:
        if self._dealer is None:
            return
        now = time.monotonic()
        live = now - self._answered <= self.stale_after_s
        if self._was_live and not live:
            log.warning("KV events of %s went quiet: back to the approximate index", self.replica)
        self._was_live = live
        if now - self._replay_sent >= self.probe_interval_s:
            self._request_replay(0 if self.last_seq is None else self.last_seq + 1)

    def _request_replay(self, start: int) -> None:
        if self._dealer is None:
            return
        self._dealer.send_multipart([b"", pack_seq(start)], flags=zmq.NOBLOCK)
        self._replay_sent = time.monotonic()

    def _heard(self) -> None:
        now = time.monotonic()
        if self._dealer is not None and now - self._answered > self.stale_after_s and self._answered:
            # Back from stale: the engine may have restarted meanwhile; rebuild from its replay.
            self._forget()
            self._answered = now
            self._request_replay(0)
            return
        self._answered = now

    def _forget(self) -> None:
        self.blocks.clear()
        self.last_seq = None
        self._last_live = None
        self._held.clear()

    def _drain_live(self) -> None:
        while True:
            try:
                frames = self._sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3:
                self.stats.decode_errors += 1
                continue
            try:
                seq = unpack_seq(frames[1])
            except ValueError:
                self.stats.decode_errors += 1
                continue
            if self._dealer is None:
                self._answered = time.monotonic()
            else:
                self._heard()
            self._live(seq, frames[2])

    def _live(self, seq: int, payload: bytes) -> None:
        if self._last_live is not None and seq <= self._last_live:
            self.stats.restarts += 1
            log.info("KV events of %s: sequence went back to %d, engine restarted", self.replica, seq)
            self._forget()
        self._last_live = seq
        last = self.last_seq
        if (last is None and seq == 0) or (last is not None and seq == last + 1):
            self._apply(seq, payload)
        elif last is not None and seq <= last:
            return  # already had it from a replay
        elif self._dealer is None:
            if last is not None:
                self.stats.gaps += 1
                self.stats.lost_batches += seq - last - 1
            self._apply(seq, payload)
        else:
            if last is not None and not self._held:
                self.stats.gaps += 1
            self._held[seq] = payload
            self._request_replay(0 if last is None else last + 1)

    def _drain_replay(self) -> None:
        assert self._dealer is not None
        while True:
            try:
                frames = self._dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 4:
                self.stats.decode_errors += 1
                continue
            try:
                seq = unpack_seq(frames[2])
            except ValueError:
                self.stats.decode_errors += 1
                continue
            if seq == END_SEQ:
                self.stats.replays += 1
                self._heard()
                self._release_held()
                continue
            last = self.last_seq
            if last is not None and seq <= last:
                continue
            if last is not None and seq > last + 1:
                self.stats.lost_batches += seq - last - 1
            self._apply(seq, frames[3])

    def _release_held(self) -> None:
        for seq in sorted(self._held):
            payload = self._held.pop(seq)
            last = self.last_seq
            if last is not None and seq <= last:
                continue
            if last is not None and seq > last + 1:
                self.stats.lost_batches += seq - last - 1
            self._apply(seq, payload)

    def _apply(self, seq: int, payload: bytes) -> None:
        started = time.perf_counter()
        try:
            batch = decode_batch(payload)
        except ValueError:
            self.stats.decode_errors += 1
            self.last_seq = seq
            return
        self.blocks.apply(batch.events)
        self.last_seq = seq
        self.stats.batches += 1
        self.stats.events += len(batch.events)
        self.stats.apply_seconds += time.perf_counter() - started
