"""Replica simulator: vLLM-compatible HTTP, a block prefix cache, a scheduler and injectable faults."""

from __future__ import annotations

from pcache.sim.cache import Allocation, PrefixCache
from pcache.sim.config import ConfigError, FaultSettings, FleetConfig, ReplicaSpec, Timing, load_fleet_config
from pcache.sim.replica import EngineRestarted, SimReplica
from pcache.sim.scheduler import Scheduler

__all__ = [
    "Allocation",
    "ConfigError",
    "EngineRestarted",
    "FaultSettings",
    "FleetConfig",
    "PrefixCache",
    "ReplicaSpec",
    "Scheduler",
    "SimReplica",
    "Timing",
    "load_fleet_config",
]
