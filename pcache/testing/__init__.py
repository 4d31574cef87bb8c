"""Launchers for tests and benchmarks: real simulator and router processes on loopback.

``SimFleet`` runs simulated replicas, ``RouterProcess`` the router daemon, both as subprocesses on
free ports; ``eventually`` polls a condition instead of sleeping; ``expect_ok`` makes a failing HTTP
call print its status and body. ``tests/`` and ``bench/`` import them from here.
"""

from pcache.testing.http import UnexpectedResponse, expect_ok, expect_status
from pcache.testing.ports import free_port
from pcache.testing.router import RouterProcess, RouterStartError
from pcache.testing.sim import SimFleet, SimFleetError
from pcache.testing.wait import eventually

__all__ = [
    "RouterProcess",
    "RouterStartError",
    "SimFleet",
    "SimFleetError",
    "UnexpectedResponse",
    "eventually",
    "expect_ok",
    "expect_status",
    "free_port",
]
