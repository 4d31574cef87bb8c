"""The simulator publishes vLLM's KV events: real ZMQ sockets on loopback, vLLM's frames and replay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from pcache.kv.events import (
    END_SEQ,
    BlockRemoved,
    BlockStored,
    EventsEndpoint,
    KVEventBatch,
    decode_batch,
    pack_seq,
    unpack_seq,
)
from pcache.sim.config import ReplicaSpec, Timing
from pcache.sim.replica import SimReplica
from pcache.sim.tokenizer import block_hashes, token_ids

TIMEOUT_MS = 10_000


@pytest.fixture
async def context() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


def replica_with_events(num_gpu_blocks: int = 1000, **endpoints: str) -> SimReplica:
    config = EventsEndpoint(
        endpoint=endpoints.get("endpoint", "tcp://127.0.0.1:*"),
        replay_endpoint=endpoints.get("replay_endpoint", "tcp://127.0.0.1:*"),
        topic="kv-events",
    )
    spec = ReplicaSpec(
        name="r1",
        block_size=4,
        num_gpu_blocks=num_gpu_blocks,
        timing=Timing(t0=0.0, per_prompt_token=0.0, inter_token=0.0),
        kv_events=config,
    )
    return SimReplica(spec)


async def receive(socket: zmq.asyncio.Socket) -> tuple[bytes, int, KVEventBatch]:
    if not await socket.poll(TIMEOUT_MS):
        raise AssertionError("no KV event arrived")
    topic, seq, payload = await socket.recv_multipart()
    return topic, unpack_seq(seq), decode_batch(payload)


async def run(replica: SimReplica, prompt: str, max_tokens: int = 1) -> int:
    async with replica.generation(prompt, max_tokens) as generation:
        await generation.prefill()
        await generation.complete()
    return generation.cached_tokens


async def subscribed(context: zmq.asyncio.Context, replica: SimReplica) -> zmq.asyncio.Socket:
    """A SUB socket connected to the replica's bound PUB, past the slow-joiner window."""
    assert replica.kv_events is not None
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv-events")
    sub.connect(replica.kv_events.endpoint)
    # A PUB drops messages until the subscription reaches it: publish probes until one arrives.
    for attempt in range(200):
        await run(replica, f"probe{attempt:04d}" * 2)
        if await sub.poll(50):
            while await sub.poll(50):
                await sub.recv_multipart()
            return sub
    raise AssertionError("the subscription never reached the publisher")


async def test_a_prefill_publishes_blockstored_with_the_prompts_tokens_and_chained_hashes(
    context: zmq.asyncio.Context,
) -> None:
    replica = replica_with_events()
    try:
        sub = await subscribed(context, replica)
        prompt = "abcdefghijklmnopqrstuvwxyz0123456789" * 2  # 72 chars = 18 tokens = 4 full blocks + 2
        await run(replica, prompt)
        topic, _, batch = await receive(sub)
        assert topic == b"kv-events"
        (event,) = batch.events
        assert isinstance(event, BlockStored)
        assert event.block_hashes == block_hashes(prompt, 4)
        assert event.parent_block_hash is None
        assert event.token_ids == token_ids(prompt)[:16]
        assert (event.block_size, event.medium) == (4, "GPU")
    finally:
        replica.shutdown()


async def test_sequence_numbers_count_up_and_a_restart_starts_them_again(
    context: zmq.asyncio.Context,
) -> None:
    replica = replica_with_events()
    try:
        sub = await subscribed(context, replica)
        await run(replica, "a" * 40)
        _, first, _ = await receive(sub)
        await run(replica, "b" * 40)
        _, second, _ = await receive(sub)
        assert second == first + 1
        replica.restart()
        await run(replica, "c" * 40)
        _, after_restart, _ = await receive(sub)
        assert after_restart == 0
    finally:
        replica.shutdown()


async def test_evictions_publish_blockremoved(context: zmq.asyncio.Context) -> None:
    replica = replica_with_events(num_gpu_blocks=12)
    try:
        sub = await subscribed(context, replica)
        await run(replica, "x" * 64)  # 16 tokens: 4 blocks + 1 for the generated token
        await run(replica, "y" * 176)  # 44 tokens + 1: all 12 blocks, so every cached block goes
        evicted_x = set(block_hashes("x" * 64, 4))
        removed: set[int] = set()
        while not evicted_x <= removed:  # the probes' blocks may go first, in batches of their own
            _, _, batch = await receive(sub)
            for event in batch.events:
                if isinstance(event, BlockRemoved):
                    removed.update(int(h) for h in event.block_hashes)
    finally:
        replica.shutdown()


async def test_replay_streams_buffered_batches_from_a_sequence_and_ends_with_minus_one(
    context: zmq.asyncio.Context,
) -> None:
    replica = replica_with_events()
    try:
        for letter in "pqr":
            await run(replica, letter * 40)  # published before anyone subscribes: only replay has them
        assert replica.kv_events is not None and replica.kv_events.replay_endpoint is not None
        dealer = context.socket(zmq.DEALER)
        dealer.connect(replica.kv_events.replay_endpoint)
        await dealer.send_multipart([b"", pack_seq(1)])
        seqs: list[int] = []
        while True:
            assert await dealer.poll(TIMEOUT_MS), "replay did not answer"
            empty, topic, seq, payload = await dealer.recv_multipart()
            assert empty == b""
            if unpack_seq(seq) == END_SEQ:
                assert payload == b""
                break
            assert topic == b"kv-events"
            seqs.append(unpack_seq(seq))
            decode_batch(payload)
        assert seqs == [1, 2]
    finally:
        replica.shutdown()


async def test_a_concrete_endpoint_makes_the_publisher_connect_to_a_bound_subscriber(
    context: zmq.asyncio.Context,
) -> None:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    replica = replica_with_events(endpoint=f"tcp://127.0.0.1:{port}")
    try:
        await run(replica, "z" * 40)  # queued by the connecting publisher until the connection is up
        _, seq, batch = await receive(sub)
        assert seq == 0 and isinstance(batch.events[0], BlockStored)
    finally:
        replica.shutdown()


async def test_tokenize_answers_like_vllm_and_renders_chat_as_a_chat_completion_does() -> None:
    import httpx

    from pcache.sim.app import build_app
    from pcache.sim.protocol import render_chat

    replica = SimReplica(ReplicaSpec(name="r1"))
    transport = httpx.ASGITransport(app=build_app(replica))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        messages = [{"role": "user", "content": "hello there"}]
        chat = (await client.post("/tokenize", json={"model": "sim-model", "messages": messages})).json()
        assert chat["tokens"] == token_ids(render_chat(messages))
        assert chat["count"] == len(chat["tokens"]) and chat["max_model_len"] == 32768
        plain = (await client.post("/tokenize", json={"prompt": "abcd0001"})).json()
        assert plain["tokens"][1] == 1  # four hex digits are that token id
        bad = await client.post("/tokenize", json={"model": "other", "prompt": "x"})
        assert bad.status_code == 404, bad.text
        assert (await client.get("/kv_event_sources")).json() == {}


async def test_the_host_tier_publishes_its_blocks_with_medium_cpu(context: zmq.asyncio.Context) -> None:
    config = EventsEndpoint(endpoint="tcp://127.0.0.1:*", replay_endpoint=None, topic="kv-events")
    spec = ReplicaSpec(
        name="r1",
        block_size=4,
        num_gpu_blocks=1000,
        host_blocks=2,
        timing=Timing(t0=0.0, per_prompt_token=0.0, inter_token=0.0),
        kv_events=config,
    )
    replica = SimReplica(spec)
    try:
        sub = await subscribed(context, replica)
        prompt = "abcd" * 4 * 3 + "z"  # three full 4-token blocks
        await run(replica, prompt)
        media: dict[str | None, list[int]] = {}
        removed_from: set[str | None] = set()
        while await sub.poll(200):
            _, _, batch = decode_batch_frames(await sub.recv_multipart())
            for event in batch.events:
                if isinstance(event, BlockStored):
                    media.setdefault(event.medium, []).extend(int(h) for h in event.block_hashes)
                elif isinstance(event, BlockRemoved):
                    removed_from.add(event.medium)
        hashes = block_hashes(prompt, 4)
        assert set(hashes) <= set(media["GPU"])
        assert set(hashes[-2:]) <= set(media["CPU"])  # what the 2-block host tier still holds
        assert "CPU" in removed_from  # 2 host blocks: three new ones evict
    finally:
        replica.shutdown()


def decode_batch_frames(frames: list[bytes]) -> tuple[bytes, int, KVEventBatch]:
    topic, seq, payload = frames
    return topic, unpack_seq(seq), decode_batch(payload)
