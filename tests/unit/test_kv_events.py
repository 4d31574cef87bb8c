"""The KV-event wire format: vLLM's own bytes decode, our bytes round-trip, the bind/connect rule."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pcache.kv.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    decode_batch,
    encode_batch,
    engine_binds,
    pack_seq,
    unpack_seq,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "vllm_kv_event_batch.msgpack"


def test_a_batch_vllm_encoded_decodes_with_every_event_and_field() -> None:
    batch = decode_batch(FIXTURE.read_bytes())
    assert batch.data_parallel_rank == 0
    stored, digest, removed, cleared = batch.events
    assert isinstance(stored, BlockStored)
    assert stored.block_hashes == [13052746734098532098, 2957529141374624438]
    assert stored.parent_block_hash is None
    assert stored.token_ids == list(range(1, 257))
    assert (stored.block_size, stored.medium, stored.lora_id) == (128, "GPU", None)
    assert isinstance(digest, BlockStored)
    assert digest.block_hashes == [b"\x01" * 32]
    assert (digest.parent_block_hash, digest.medium) == (2957529141374624438, "CPU")
    assert isinstance(removed, BlockRemoved)
    assert (removed.block_hashes, removed.medium) == ([2957529141374624438], "GPU")
    assert isinstance(cleared, AllBlocksCleared)


def test_our_encoding_round_trips_and_keeps_vllms_layout() -> None:
    batch = KVEventBatch(
        ts=1.5,
        events=[BlockStored(block_hashes=[7], parent_block_hash=None, token_ids=[1, 2], block_size=2)],
        data_parallel_rank=0,
    )
    payload = encode_batch(batch)
    assert decode_batch(payload) == batch
    raw = msgspec.msgpack.decode(payload)
    assert raw[0] == 1.5 and raw[2] == 0  # [ts, [events], dp_rank]
    assert raw[1][0]["type"] == "BlockStored"


def test_a_bad_payload_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_batch(b"\x93\x01")


@pytest.mark.parametrize(
    ("endpoint", "binds"),
    [
        ("tcp://*:5557", True),
        ("tcp://[::]:5557", True),
        ("ipc:///tmp/kv", True),
        ("inproc://kv", True),
        ("tcp://127.0.0.1:5557", False),
        ("tcp://127.0.0.1:*", True),
    ],
)
def test_the_engine_binds_wildcards_and_local_transports_and_connects_to_hosts(
    endpoint: str, binds: bool
) -> None:
    assert engine_binds(endpoint) is binds


def test_sequence_frames_are_eight_bytes_big_endian_and_minus_one_ends_a_replay() -> None:
    assert pack_seq(1) == b"\x00" * 7 + b"\x01"
    assert unpack_seq(pack_seq(-1)) == -1
    with pytest.raises(ValueError):
        unpack_seq(b"\x01")
