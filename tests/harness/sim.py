"""Kept for branches that still import from here: the launcher lives in ``pcache.testing``."""

from pcache.testing.sim import SimFleet, SimFleetError, _pump_lines

__all__ = ["SimFleet", "SimFleetError", "_pump_lines"]
