"""Every replica's KV-event subscriber and precise index, as routing and status see them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pcache.kv.events import EventsEndpoint
from pcache.kv.index import DEFAULT_MEDIUM_WEIGHTS, ReplicaBlocks
from pcache.kv.subscriber import KvEventSubscriber

__all__ = ["KvEventsHub"]


@dataclass(slots=True)
class _Replica:
    blocks: ReplicaBlocks
    subscriber: KvEventSubscriber


class KvEventsHub:
    """Starts one subscriber per replica with ``kv_events`` configured; answers which are live.

    ``stale_after_s`` is the health interval: a replica whose engine stops answering is back on the
    approximate index within it. ``max_blocks`` bounds each replica's index.
    """

    def __init__(
        self,
        *,
        medium_weights: Mapping[str, float] = DEFAULT_MEDIUM_WEIGHTS,
        stale_after_s: float = 2.0,
        max_blocks: int = 1_000_000,
    ) -> None:
        self.medium_weights = dict(medium_weights)
        self.stale_after_s = stale_after_s
        self.max_blocks = max_blocks
        self._replicas: dict[str, _Replica] = {}
        self._lock = threading.Lock()

    def add(self, name: str, config: EventsEndpoint, host: str) -> None:
        """Subscribe to ``name``'s engine (replacing an earlier subscription). Raises OSError when
        the address the engine connects to cannot be bound."""
        self.remove(name)
        blocks = ReplicaBlocks(self.max_blocks)
        subscriber = KvEventSubscriber(
            name,
            config,
            host,
            blocks,
            probe_interval_s=max(0.05, self.stale_after_s / 4),
            stale_after_s=self.stale_after_s,
        )
        subscriber.start()
        with self._lock:
            self._replicas[name] = _Replica(blocks, subscriber)

    def remove(self, name: str) -> None:
        with self._lock:
            entry = self._replicas.pop(name, None)
        if entry is not None:
            entry.subscriber.close()

    def close(self) -> None:
        for name in list(self._replicas):
            self.remove(name)

    def configured(self) -> list[str]:
        return sorted(self._replicas)

    def any_live(self) -> bool:
        return any(entry.subscriber.live for entry in list(self._replicas.values()))

    def live(self, name: str) -> ReplicaBlocks | None:
        """The replica's precise index while its events are live, else None (use the approximate)."""
        entry = self._replicas.get(name)
        if entry is None or not entry.subscriber.live:
            return None
        return entry.blocks

    def status(self, name: str) -> dict[str, Any] | None:
        """What status shows of a replica's events; None when it has none configured."""
        entry = self._replicas.get(name)
        if entry is None:
            return None
        subscriber, blocks, stats = entry.subscriber, entry.blocks, entry.subscriber.stats
        size = blocks.block_size or 0
        return {
            "precise": subscriber.live,
            "endpoint": subscriber.address,
            "mode": "connect" if subscriber.connects else "bind",
            "last_seq": subscriber.last_seq,
            "block_size": blocks.block_size,
            "cached_blocks": len(blocks),
            "cached_tokens_by_medium": {m: n * size for m, n in sorted(blocks.held_blocks().items())},
            "batches": stats.batches,
            "events": stats.events,
            "gaps": stats.gaps,
            "replays": stats.replays,
            "lost_batches": stats.lost_batches,
            "restarts": stats.restarts,
            "decode_errors": stats.decode_errors,
            "removed_blocks": blocks.removed,
            "unplaced_blocks": blocks.unplaced,
            "apply_seconds": round(stats.apply_seconds, 6),
        }
