"""vLLM's KV-cache event wire format, decoded and encoded with msgspec.

A message has three frames: the topic, an 8-byte big-endian sequence number, and a msgpack
``[timestamp, [events...], data_parallel_rank]``. Events are maps tagged by ``type``:
``BlockStored``, ``BlockRemoved``, ``AllBlocksCleared`` (vLLM's ``vllm/distributed/kv_events.py``).
A block hash is an int (the low 64 bits of the engine's digest) or the digest bytes, depending on
the engine's ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``. Unknown fields are ignored, so newer engines
that add fields still decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

__all__ = [
    "END_SEQ",
    "AllBlocksCleared",
    "BlockHash",
    "BlockRemoved",
    "BlockStored",
    "EventsEndpoint",
    "KVEvent",
    "KVEventBatch",
    "decode_batch",
    "encode_batch",
    "engine_binds",
    "pack_seq",
    "unpack_seq",
]

BlockHash = int | bytes

END_SEQ = -1  # the sequence number that ends a replay stream


class BlockStored(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """Full blocks an engine computed and cached: ``token_ids`` holds ``block_size`` ids per block."""

    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[list[object] | None] | None = None
    group_idx: int | None = None


class BlockRemoved(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """Blocks an engine evicted from ``medium``."""

    block_hashes: list[BlockHash]
    medium: str | None = None
    group_idx: int | None = None


class AllBlocksCleared(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """The engine dropped its whole prefix cache (``/reset_prefix_cache``)."""


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One engine step's events."""

    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


_decoder = msgspec.msgpack.Decoder(KVEventBatch)
_encoder = msgspec.msgpack.Encoder()


def decode_batch(payload: bytes) -> KVEventBatch:
    """Decode a payload frame; raises ``msgspec.DecodeError`` (a ``ValueError``) on a bad one."""
    return _decoder.decode(payload)


def encode_batch(batch: KVEventBatch) -> bytes:
    return _encoder.encode(batch)


def pack_seq(seq: int) -> bytes:
    """A sequence number as its 8-byte big-endian frame (signed, so the end marker is -1)."""
    return seq.to_bytes(8, "big", signed=True)


def unpack_seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise ValueError(f"a sequence frame has 8 bytes, not {len(frame)}")
    return int.from_bytes(frame, "big", signed=True)


def engine_binds(endpoint: str) -> bool:
    """vLLM's rule: its PUB socket binds wildcard, IPv6-any and ipc/inproc endpoints, connects to the
    rest; a subscriber does the opposite."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


@dataclass(frozen=True, slots=True)
class EventsEndpoint:
    """Where an engine publishes, in the names of vLLM's ``--kv-events-config``."""

    endpoint: str
    replay_endpoint: str | None = None
    topic: str = ""
