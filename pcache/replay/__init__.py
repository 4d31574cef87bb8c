"""Offline trace replay: the real policy code over a simulated fleet with finite caches and queues."""

from __future__ import annotations

from pcache.replay.runner import TIER_AWARE, PolicyResult, ReplayReport, ScaleEvent, run_replay
from pcache.replay.simfleet import ServiceModel, SimulatedFleet
from pcache.replay.trace import TraceError, TraceFingerprinter, TraceReader, TraceRecord

__all__ = [
    "TIER_AWARE",
    "PolicyResult",
    "ReplayReport",
    "ScaleEvent",
    "ServiceModel",
    "SimulatedFleet",
    "TraceError",
    "TraceFingerprinter",
    "TraceReader",
    "TraceRecord",
    "run_replay",
]
