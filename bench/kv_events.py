"""The precise index's costs: KV-event ingestion against the event loop, and tokenizing requests.

    .venv/bin/python bench/kv_events.py
    .venv/bin/python bench/kv_events.py --seconds 5 --calls 300

1. Ingestion: a publisher thread floods a real ZMQ PUB socket (loopback TCP) with vLLM-shaped
   batches (one BlockStored of 8 blocks x 16 tokens, then half of them removed), paced at
   ``--rate`` batches/s (a busy engine publishes one batch per scheduler step) and unpaced; a
   :class:`~pcache.kv.subscriber.KvEventSubscriber` decodes and indexes them on its own thread,
   and the main thread's asyncio loop measures its lag (how late a 1 ms sleep wakes up), with and
   without the flood. The data plane shares that loop, so the lag is what ingestion costs it.
2. Tokenizing a ~2,000-character chat request: the engine's ``/tokenize`` over loopback HTTP (a
   ``pcache sim`` replica), and the router's own tokenizer (the tiny Llama's tokenizer.json and
   chat template from tests/fixtures).
Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq
from rich.console import Console
from rich.table import Table

from pcache.kv.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventsEndpoint,
    KVEventBatch,
    encode_batch,
    pack_seq,
)
from pcache.kv.index import ReplicaBlocks
from pcache.kv.local_tokenizer import LocalTokenizer
from pcache.kv.subscriber import KvEventSubscriber
from pcache.kv.tokenize_client import EngineTokenize

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "tiny-llama-tokenizer"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _loop_lag(seconds: float) -> list[float]:
    """How late each 1 ms sleep wakes up, in ms, for ``seconds``."""
    lags: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - before - 0.001) * 1000)
    return lags


def _flood(pub: zmq.Socket[bytes], rate: float, stop: threading.Event) -> None:
    seq = 0
    parent: int | None = None
    while not stop.is_set():
        hashes = [seq * 8 + i for i in range(8)]
        stored = BlockStored(list[int | bytes](hashes), parent, list(range(seq, seq + 128)), 16, medium="GPU")
        removed = BlockRemoved(list[int | bytes](hashes[4:]), medium="GPU")
        for events in ([stored], [removed]):
            batch = KVEventBatch(time.time(), list[BlockStored | BlockRemoved | AllBlocksCleared](events), 0)
            pub.send_multipart([b"kv", pack_seq(seq), encode_batch(batch)])
            seq += 1
        parent = hashes[3]
        if rate > 0:
            time.sleep(2 / rate)  # two batches per round


def ingestion(seconds: float, rate: float) -> tuple[list[float], int, float]:
    """Loop lag while a subscriber ingests batches at ``rate`` per second (0: as fast as it can)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.set_hwm(1_000_000)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    blocks = ReplicaBlocks(max_blocks=200_000)
    subscriber = KvEventSubscriber("r1", EventsEndpoint(f"tcp://*:{port}", None, "kv"), "127.0.0.1", blocks)
    stop = threading.Event()
    flooder = threading.Thread(target=_flood, args=(pub, rate, stop))
    subscriber.start()
    flooder.start()
    loaded = asyncio.run(_loop_lag(seconds))
    stop.set()
    flooder.join()
    subscriber.close()
    pub.close(linger=0)
    stats = subscriber.stats
    per_batch_us = stats.apply_seconds / stats.batches * 1e6 if stats.batches else 0.0
    return loaded, stats.batches, per_batch_us


def _chat() -> dict[str, object]:
    words = ("the", "router", "keeps", "every", "session", "on", "the", "replica", "that", "holds", "it")
    text = " ".join(words[i % len(words)] for i in range(330))
    return {
        "model": "sim-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    }


async def _tokenize_calls(url: str, calls: int) -> list[float]:
    client = EngineTokenize()
    body = _chat()
    times: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        tokens = await client.tokens(url, body)
        times.append((time.perf_counter() - started) * 1000)
        assert tokens is not None, "the replica's /tokenize failed"
    await client.aclose()
    return times


def engine_tokenize(calls: int) -> list[float]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "pcache.sim", "--replicas", "1", "--base-port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert sim.stdout is not None
        url = ""
        for line in sim.stdout:
            words = line.split()
            if words[:1] == ["replica"]:
                url = words[2]
            if words == ["ready"]:
                break
        return asyncio.run(_tokenize_calls(url, calls))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def local_tokenize(calls: int) -> list[float]:
    tokenizer = LocalTokenizer(TOKENIZER)
    body = _chat()
    times: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        tokenizer.tokens(body)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Loop-lag measuring time per case.")
    parser.add_argument("--calls", type=int, default=200, help="Tokenize calls per tokenizer.")
    parser.add_argument("--rate", type=float, default=1000.0, help="Paced case: batches per second.")
    args = parser.parse_args()
    baseline = asyncio.run(_loop_lag(args.seconds))
    paced, paced_n, paced_us = ingestion(args.seconds, args.rate)
    flood, flood_n, flood_us = ingestion(args.seconds, 0)
    engine = engine_tokenize(args.calls)
    local = local_tokenize(args.calls)
    table = Table(title="precise index costs")
    for column in ("what", "p50", "p99", "max", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")
    for name, values, note in (
        ("loop lag, idle (ms)", baseline, "1 ms sleeps on the router's kind of loop"),
        (
            "loop lag, paced events (ms)",
            paced,
            f"{paced_n / args.seconds:,.0f} batches/s, {paced_us:.1f} µs each",
        ),
        ("loop lag, flood (ms)", flood, f"{flood_n / args.seconds:,.0f} batches/s, {flood_us:.1f} µs each"),
        ("/tokenize round trip (ms)", engine, "sim replica over loopback HTTP, ~2k-char chat"),
        ("local tokenizer (ms)", local, "tokenizer.json + chat template, same chat"),
    ):
        table.add_row(
            name,
            f"{statistics.median(values):.3f}",
            f"{_quantile(values, 0.99):.3f}",
            f"{max(values):.3f}",
            note,
        )
    Console().print(table)


if __name__ == "__main__":
    main()
