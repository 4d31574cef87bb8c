"""The simulator's KV-event publisher: vLLM's ZMQ PUB socket and replay ROUTER, same wire format.

Like vLLM's ``ZmqEventPublisher``: the PUB socket binds when the endpoint has ``*`` or ``::`` or is
``ipc://``/``inproc://`` and connects otherwise; the replay socket always binds, answers a request
``[b"", start_seq]`` with every buffered batch from ``start_seq`` on as ``[b"", topic, seq,
payload]`` and ends with seq -1 and an empty payload. Sockets are used by one thread only, fed
through a queue, so publishing never blocks the simulator's event loop. ``restart()`` starts the
sequence again at 0 with an empty buffer, as a restarted engine process does.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque

import zmq

from pcache.kv.events import (
    END_SEQ,
    EventsEndpoint,
    KVEvent,
    KVEventBatch,
    encode_batch,
    engine_binds,
    pack_seq,
)

__all__ = ["KvEventPublisher"]

_RESTART = object()  # queue marker: the engine restarted
_STOP = object()


class KvEventPublisher:
    """Publishes one replica's KV events; ``endpoint``/``replay_endpoint`` are the bound addresses."""

    def __init__(self, config: EventsEndpoint, *, buffer_steps: int = 10_000, hwm: int = 100_000) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._topic = config.topic.encode("utf-8")
        self._pub = self._context.socket(zmq.PUB)
        self._pub.set_hwm(hwm)
        self._replay: zmq.Socket[bytes] | None = None
        try:
            if engine_binds(config.endpoint):
                self._pub.bind(config.endpoint)
                self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                self._pub.connect(config.endpoint)
                self.endpoint = config.endpoint
            self.replay_endpoint: str | None = None
            if config.replay_endpoint is not None:
                self._replay = self._context.socket(zmq.ROUTER)
                self._replay.bind(config.replay_endpoint)
                self.replay_endpoint = self._replay.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        self.topic = config.topic
        self._queue: queue.SimpleQueue[KVEventBatch | object] = queue.SimpleQueue()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="sim-kv-events", daemon=True)
        self._thread.start()

    def publish(self, events: list[KVEvent]) -> None:
        """Queue one batch (one engine step's events); safe from any thread."""
        if events:
            self._queue.put(KVEventBatch(ts=time.time(), events=events, data_parallel_rank=0))

    def restart(self) -> None:
        """The engine restarted: the next batch is seq 0 and the replay buffer is empty."""
        self._queue.put(_RESTART)

    def close(self) -> None:
        """Send what is queued, stop the thread, close the sockets."""
        self._queue.put(_STOP)
        self._thread.join(timeout=5)
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)

    def _run(self) -> None:
        while True:
            if self._replay is not None and self._replay.poll(0):
                self._serve_replay(self._replay)
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            if item is _RESTART:
                self._seq = 0
                self._buffer.clear()
                continue
            assert isinstance(item, KVEventBatch)
            payload = encode_batch(item)
            self._pub.send_multipart((self._topic, pack_seq(self._seq), payload))
            self._buffer.append((self._seq, payload))
            self._seq += 1

    def _serve_replay(self, socket: zmq.Socket[bytes]) -> None:
        frames = socket.recv_multipart()
        if len(frames) != 3 or len(frames[2]) != 8:
            return  # not a replay request; vLLM drops it too
        client, _, start = frames
        first = int.from_bytes(start, "big", signed=True)
        for seq, payload in self._buffer:
            if seq >= first:
                socket.send_multipart((client, b"", self._topic, pack_seq(seq), payload))
        socket.send_multipart((client, b"", b"", pack_seq(END_SEQ), b""))
