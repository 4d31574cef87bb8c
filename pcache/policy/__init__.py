"""Routing policies: one module each, one interface (:class:`~pcache.policy.base.Policy`).

:func:`make_policy` builds one by name; :data:`POLICY_NAMES` lists the names, default first.
"""

from __future__ import annotations

from typing import Any

from pcache.policy.base import Policy
from pcache.policy.cache_aware import CacheAwarePolicy
from pcache.policy.least_load import LeastLoadPolicy
from pcache.policy.prefix_hash import PrefixHashPolicy
from pcache.policy.round_robin import RoundRobinPolicy
from pcache.policy.session import SessionPolicy
from pcache.policy.tiered import TieredPolicy

__all__ = [
    "POLICY_NAMES",
    "CacheAwarePolicy",
    "LeastLoadPolicy",
    "PrefixHashPolicy",
    "RoundRobinPolicy",
    "SessionPolicy",
    "TieredPolicy",
    "UnknownPolicyError",
    "make_policy",
]

_POLICIES: dict[str, type[Any]] = {
    "tiered": TieredPolicy,
    "cache_aware": CacheAwarePolicy,
    "prefix_hash": PrefixHashPolicy,
    "session": SessionPolicy,
    "least_load": LeastLoadPolicy,
    "round_robin": RoundRobinPolicy,
}

POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)


class UnknownPolicyError(ValueError):
    """A policy name that is not one of :data:`POLICY_NAMES`; the message lists the valid ones."""


def make_policy(name: str, **params: Any) -> Policy:
    """A new policy instance by name; ``params`` go to its constructor (a TypeError names bad ones)."""
    cls = _POLICIES.get(name.strip().lower().replace("-", "_"))
    if cls is None:
        raise UnknownPolicyError(f"unknown policy {name!r}; valid policies: {', '.join(POLICY_NAMES)}")
    policy: Policy = cls(**params)
    return policy
