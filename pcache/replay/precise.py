"""The precise index in replay: each replayed replica's own cache, as its KV events would report it.

A trace's ``hash_ids`` are the engine's blocks, so the precise match of a request on a replica is
the run of its leading blocks that replica's simulated cache holds now: what live routing learns
from KV events, without the events' transport.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pcache.kv.index import PreciseMatch
from pcache.replay.simfleet import SimulatedFleet, SimulatedReplica

__all__ = ["FleetCaches"]


class _ReplicaCache:
    """One replayed replica's cache as a precise index."""

    __slots__ = ("_replica",)

    def __init__(self, replica: SimulatedReplica) -> None:
        self._replica = replica

    @property
    def block_size(self) -> int | None:
        return self._replica.model.block_tokens

    def match(self, keys: Sequence[int], weights: Mapping[str, float]) -> PreciseMatch:
        blocks = self._replica.cached_prefix(tuple(keys))
        size = self._replica.model.block_tokens
        tokens = blocks * size
        return PreciseMatch(blocks, size, {"GPU": tokens} if tokens else {}, weights.get("GPU", 1.0) * tokens)


class FleetCaches:
    """A :class:`~pcache.policy.cache_index.PreciseSource` over a replayed fleet: every replica live."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self._fleet = fleet
        self._views: dict[str, _ReplicaCache] = {}

    @property
    def medium_weights(self) -> Mapping[str, float]:
        return {"GPU": 1.0}

    def live(self, name: str) -> _ReplicaCache | None:
        replica = self._fleet.replicas.get(name)
        if replica is None:
            return None
        view = self._views.get(name)
        if view is None or view._replica is not replica:
            view = self._views[name] = _ReplicaCache(replica)
        return view
