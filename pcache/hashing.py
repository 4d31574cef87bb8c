"""Rendezvous (highest-random-weight) hashing and the bounded-load choice.

Each (key, replica) pair gets a pseudo-random u in (0, 1) from a 64-bit xxhash of the key seeded
with the replica's own seed; the weighted score is ``-weight / ln(u)`` (weighted rendezvous), so a
replica wins a share of keys proportional to its weight and adding or removing one replica moves
only the keys it wins or held. :func:`bounded_choice` then walks a ranking and takes the first
replica whose load stays under ``ceil((1 + eps) * mean_load)``, the mean counting the new request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import xxhash

from pcache.fleet_view import ReplicaView

__all__ = [
    "bounded_choice",
    "hrw_rank",
    "hrw_score",
    "hrw_score_bytes",
    "hrw_scores",
    "key_bytes",
    "load_bound",
    "replica_seed",
]

_MASK64 = (1 << 64) - 1
_TO_UNIT = 2.0**-53
_hash = xxhash.xxh3_64_intdigest


def key_bytes(key: int | str) -> bytes:
    """The bytes a routing key hashes as (ints as 8 little-endian bytes, strings as UTF-8)."""
    if isinstance(key, int):
        return (key & _MASK64).to_bytes(8, "little")
    return key.encode("utf-8", "surrogatepass")


@lru_cache(maxsize=65536)
def replica_seed(name: str) -> int:
    """A replica's hash seed, derived from its name (stable across processes and routers)."""
    return _hash(name.encode("utf-8", "surrogatepass"), 0x9E3779B97F4A7C15)


def _score(kb: bytes, seed: int, weight: float) -> float:
    u = ((_hash(kb, seed) >> 11) + 0.5) * _TO_UNIT  # strictly inside (0, 1)
    return -weight / math.log(u)


def hrw_score_bytes(kb: bytes, replica: str, weight: float = 1.0) -> float:
    """:func:`hrw_score` for a key already turned into bytes by :func:`key_bytes` (the hot path)."""
    return _score(kb, replica_seed(replica), weight)


def hrw_score(key: int | str, replica: str, weight: float = 1.0) -> float:
    """The weighted rendezvous score of ``replica`` for ``key`` (higher wins)."""
    return _score(key_bytes(key), replica_seed(replica), weight)


def hrw_scores(key: int | str, replicas: Sequence[ReplicaView]) -> list[float]:
    """Weighted rendezvous scores of ``key`` for each replica, in the order given (the hot path)."""
    kb = key_bytes(key)
    log = math.log
    seed_of = replica_seed
    return [-r.weight / log(((_hash(kb, seed_of(r.name)) >> 11) + 0.5) * _TO_UNIT) for r in replicas]


def hrw_rank(key: int | str, replicas: Iterable[ReplicaView | str]) -> list[tuple[str, float]]:
    """Replicas ranked for ``key``, best first, as (name, score). Weights come from ReplicaViews."""
    kb = key_bytes(key)
    scored: list[tuple[str, float]] = []
    for replica in replicas:
        if isinstance(replica, str):
            scored.append((replica, _score(kb, replica_seed(replica), 1.0)))
        else:
            scored.append((replica.name, _score(kb, replica_seed(replica.name), replica.weight)))
    scored.sort(key=lambda item: item[1], reverse=True)
    return scored


def load_bound(total_load: int, replicas: int, eps: float = 0.25) -> int:
    """``ceil((1 + eps) * mean)``, the mean over ``replicas`` counting the request being placed.

    A replica may take the request when its load + 1 stays within the bound; since some replica
    always has load <= floor(total / n), someone always fits for any eps >= 0.
    """
    if replicas < 1:
        return 0
    return math.ceil((1.0 + eps) * (total_load + 1) / replicas)


def bounded_choice(ranking: Sequence[str], loads: Mapping[str, int], bound: int) -> str | None:
    """The first replica in ``ranking`` whose load + 1 is within ``bound``, or None if none is."""
    for name in ranking:
        if loads.get(name, 0) + 1 <= bound:
            return name
    return None
