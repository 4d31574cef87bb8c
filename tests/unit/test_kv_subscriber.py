"""The subscriber against a scripted engine: real ZMQ PUB and replay ROUTER sockets on loopback,
driven by the test so gaps, restarts and silence happen exactly when wanted."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import zmq

from pcache.kv.events import END_SEQ, BlockStored, EventsEndpoint, KVEventBatch, encode_batch, pack_seq
from pcache.kv.index import DEFAULT_MEDIUM_WEIGHTS, ReplicaBlocks, chain_keys
from pcache.kv.subscriber import KvEventSubscriber, subscriber_address
from tests.harness.wait import eventually

TOPIC = b"kv-events"


def block(seq: int) -> bytes:
    """Batch ``seq`` stores block ``seq`` of a chain (parent = block seq - 1)."""
    event = BlockStored(
        block_hashes=[1000 + seq],
        parent_block_hash=None if seq == 0 else 1000 + seq - 1,
        token_ids=[seq] * 4,
        block_size=4,
        medium="GPU",
    )
    return encode_batch(KVEventBatch(ts=time.time(), events=[event], data_parallel_rank=0))


CHAIN = [seq for seq in range(50) for _ in range(4)]  # the tokens of blocks 0..49


class ScriptedEngine:
    """A PUB that binds and a replay ROUTER, answering replay requests from ``history``."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.replay = self.context.socket(zmq.ROUTER)
        self.replay_port = self.replay.bind_to_random_port("tcp://127.0.0.1")
        self.history: dict[int, bytes] = {}
        self.answering = True
        self.requests: list[int] = []

    def config(self) -> EventsEndpoint:
        return EventsEndpoint(f"tcp://*:{self.port}", f"tcp://*:{self.replay_port}", "kv-events")

    def publish(self, seq: int, payload: bytes | None = None, *, send: bool = True) -> None:
        payload = payload if payload is not None else block(seq)
        self.history[seq] = payload
        if send:
            self.pub.send_multipart([TOPIC, pack_seq(seq), payload])

    def serve_replays(self) -> None:
        while self.replay.poll(0):
            client, _, start = self.replay.recv_multipart()
            first = int.from_bytes(start, "big", signed=True)
            self.requests.append(first)
            if not self.answering:
                continue
            for seq in sorted(self.history):
                if seq >= first:
                    self.replay.send_multipart([client, b"", TOPIC, pack_seq(seq), self.history[seq]])
            self.replay.send_multipart([client, b"", b"", pack_seq(END_SEQ), b""])

    def close(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture
def engine() -> Iterator[ScriptedEngine]:
    scripted = ScriptedEngine()
    yield scripted
    scripted.close()


def matched(blocks: ReplicaBlocks) -> int:
    return blocks.match(chain_keys(CHAIN, 4), DEFAULT_MEDIUM_WEIGHTS).blocks


def serving(engine: ScriptedEngine, condition: object) -> object:
    """Serve replay requests while waiting for ``condition``."""

    def check() -> object:
        engine.serve_replays()
        return condition() if callable(condition) else condition

    return eventually(check, timeout_s=10, interval_s=0.01)


def start(engine: ScriptedEngine, stale_after_s: float = 5.0) -> tuple[KvEventSubscriber, ReplicaBlocks]:
    blocks = ReplicaBlocks()
    subscriber = KvEventSubscriber(
        "r1", engine.config(), "127.0.0.1", blocks, probe_interval_s=0.05, stale_after_s=stale_after_s
    )
    subscriber.start()
    return subscriber, blocks


def test_the_subscriber_connects_to_an_engine_that_binds_and_binds_for_one_that_connects() -> None:
    assert subscriber_address("tcp://*:5557", "10.0.0.7") == ("tcp://10.0.0.7:5557", True)
    assert subscriber_address("tcp://[::]:5557", "10.0.0.7") == ("tcp://10.0.0.7:5557", True)
    assert subscriber_address("ipc:///tmp/kv", "h") == ("ipc:///tmp/kv", True)
    assert subscriber_address("tcp://127.0.0.1:5557", "h") == ("tcp://127.0.0.1:5557", False)


def test_history_from_before_it_connected_comes_by_replay(engine: ScriptedEngine) -> None:
    for seq in range(3):
        engine.publish(seq, send=False)  # published before anyone listened
    subscriber, blocks = start(engine)
    try:
        serving(engine, lambda: matched(blocks) == 3 and subscriber.live)
        assert engine.requests[0] == 0
    finally:
        subscriber.close()


def test_a_gap_in_the_live_sequence_is_filled_by_replay(engine: ScriptedEngine) -> None:
    subscriber, blocks = start(engine)
    try:
        serving(engine, lambda: subscriber.stats.replays >= 1)
        # Live batches, with seq 2 lost on the way: 3 waits until replay brings 2.
        sent = 0

        def delivered() -> bool:
            nonlocal sent
            engine.publish(sent)
            sent += 1
            return matched(blocks) >= 1  # the subscription has reached the PUB

        serving(engine, delivered)
        gap = sent
        engine.publish(gap, send=False)
        engine.publish(gap + 1)
        serving(engine, lambda: matched(blocks) == gap + 2)
        assert subscriber.stats.gaps >= 1 and gap in engine.requests
    finally:
        subscriber.close()


def test_a_sequence_that_goes_back_is_an_engine_restart_and_its_blocks_are_forgotten(
    engine: ScriptedEngine,
) -> None:
    subscriber, blocks = start(engine)
    try:
        sent = 0

        def delivered() -> bool:
            nonlocal sent
            engine.publish(sent)
            sent += 1
            return matched(blocks) >= 3

        serving(engine, delivered)
        # The engine restarts: a fresh sequence and history, storing other content.
        engine.history.clear()
        other = BlockStored(block_hashes=[77], parent_block_hash=None, token_ids=[9] * 4, block_size=4)
        engine.publish(0, encode_batch(KVEventBatch(ts=time.time(), events=[other])))
        serving(engine, lambda: subscriber.stats.restarts == 1)
        serving(engine, lambda: matched(blocks) == 0 and len(blocks) == 1)
    finally:
        subscriber.close()


def test_an_engine_that_stops_answering_goes_stale_and_comes_back_rebuilt(engine: ScriptedEngine) -> None:
    subscriber, blocks = start(engine, stale_after_s=0.3)
    try:
        engine.publish(0, send=False)
        serving(engine, lambda: subscriber.live and matched(blocks) == 1)
        engine.answering = False
        serving(engine, lambda: not subscriber.live)
        engine.publish(1, send=False)
        engine.answering = True
        serving(engine, lambda: subscriber.live and matched(blocks) == 2)
        assert engine.requests.count(0) >= 2  # rebuilt from the start of the engine's history
    finally:
        subscriber.close()


def test_an_engine_that_connects_reaches_a_subscriber_that_binds() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocks = ReplicaBlocks()
    config = EventsEndpoint(f"tcp://127.0.0.1:{port}", None, "kv-events")
    subscriber = KvEventSubscriber("r1", config, "127.0.0.1", blocks)
    assert not subscriber.connects
    subscriber.start()
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    try:
        seq = 0

        def delivered() -> bool:
            nonlocal seq
            pub.send_multipart([TOPIC, pack_seq(seq), block(0)])  # each a first block
            seq += 1
            return matched(blocks) >= 1

        eventually(delivered, timeout_s=10, interval_s=0.01)
        assert subscriber.live  # no replay endpoint: live while running
    finally:
        subscriber.close()
        context.destroy(linger=0)
