"""KV-cache usage levels the operator views share: `pcache status` and `pcache top` colour alike.

After vllm-htop: yellow from 65% (the cache is filling; prefix evictions begin under bursts), red
from 85% (new requests wait for blocks).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["KV_CRITICAL", "KV_WARN", "KvLevel", "kv_level"]

KV_WARN = 0.65
KV_CRITICAL = 0.85

KvLevel = Literal["ok", "warn", "critical"]


def kv_level(usage: float) -> KvLevel:
    """Which band a KV usage ratio (0..1) falls in."""
    if usage >= KV_CRITICAL:
        return "critical"
    if usage >= KV_WARN:
        return "warn"
    return "ok"
