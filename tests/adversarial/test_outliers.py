"""Replicas that fail real requests are held out; a fleet all marked down is still tried.

Issue 18 item 9: a replica answering 500 to everything while ``/health`` was fine flapped
healthy/unhealthy six times; with every replica marked unhealthy clients got errors although the
replicas could have answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcache.fleet_view import FleetView, ReplicaState, ReplicaView
from pcache.router.outlier import OutlierDetector, panic_view
from pcache.testing.replica import RecordingReplica
from tests.harness.router import RouterProcess
from tests.harness.wait import eventually

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_eject_with_a_growing_back_off() -> None:
    clock = Clock()
    detector = OutlierDetector(consecutive_failures=3, base_ejection_s=10, max_ejection_s=25, clock=clock)
    assert detector.failure("r1", "HTTP 500", 4) is None
    detector.success("r1")  # the streak is broken
    assert [detector.failure("r1", "HTTP 500", 4) for _ in range(2)] == [None, None]
    first = detector.failure("r1", "HTTP 500", 4)
    assert first is not None and first.seconds == 10 and detector.ejected("r1")
    clock.now += 10
    assert not detector.ejected("r1")
    for _ in range(2):
        assert detector.failure("r1", "HTTP 500", 4) is None
    second = detector.failure("r1", "HTTP 500", 4)
    assert second is not None and second.seconds == 20
    clock.now += 20
    for _ in range(2):
        detector.failure("r1", "HTTP 500", 4)
    third = detector.failure("r1", "HTTP 500", 4)
    assert third is not None and third.seconds == 25, "capped at max_ejection_s"


def test_no_more_than_the_allowed_fraction_is_ejected() -> None:
    detector = OutlierDetector(consecutive_failures=1, max_ejected_fraction=0.5, clock=Clock())
    assert detector.failure("r1", "x", 4) is not None
    assert detector.failure("r2", "x", 4) is not None
    assert detector.failure("r3", "x", 4) is None, "a third of four would leave too little"


def _view(*states: ReplicaState) -> FleetView:
    replicas = tuple(ReplicaView(name=f"r{i}", state=s, load=0) for i, s in enumerate(states))
    return FleetView(replicas=replicas, tier1={})


def test_panic_shows_unhealthy_replicas_healthy_only_when_none_is_healthy() -> None:
    assert panic_view(_view(ReplicaState.HEALTHY, ReplicaState.UNHEALTHY)) is None
    assert panic_view(_view(ReplicaState.DRAINED)) is None
    panic = panic_view(_view(ReplicaState.UNHEALTHY, ReplicaState.DRAINED))
    assert panic is not None
    assert [r.state for r in panic.replicas] == [ReplicaState.HEALTHY, ReplicaState.DRAINED]


@pytest.fixture()
def broken() -> Iterator[RecordingReplica]:
    with RecordingReplica(status=500) as replica:
        yield replica


@pytest.fixture()
def good() -> Iterator[RecordingReplica]:
    with RecordingReplica() as replica:
        yield replica


@pytest.mark.integration
def test_a_replica_failing_requests_stays_out_though_its_health_checks_pass(
    broken: RecordingReplica, good: RecordingReplica, tmp_path: Path
) -> None:
    with (
        RouterProcess(
            replicas={"bad": broken.url, "ok": good.url},
            state_dir=tmp_path,
            policy="round_robin",
            health={"interval_s": 0.1, "failures": 100, "recoveries": 1},
            outlier={"consecutive_failures": 3, "base_ejection_s": 60},
        ) as router,
        router.admin() as admin,
    ):
        for i in range(12):
            response = httpx.post(f"{router.url}/v1/chat/completions", json=CHAT, timeout=30)
            assert response.status_code == 200, f"request {i}: {response.status_code} {response.text}"

        def state() -> str:
            return next(r.state for r in admin.replicas() if r.name == "bad")

        eventually(lambda: state() == "unhealthy", what="the failing replica to be ejected")
        hits = len(broken.hits)
        served_before = len(good.hits)
        for _ in range(10):  # many passing health checks later, it is still out
            httpx.post(f"{router.url}/v1/chat/completions", json=CHAT, timeout=30).raise_for_status()
        assert state() == "unhealthy"
        assert len(broken.hits) == hits, "an ejected replica got new requests"
        assert len(good.hits) >= served_before + 10
        metrics = httpx.get(f"{router.url}/metrics", timeout=10).text
        assert 'pcache_outlier_ejections_total{replica="bad"} 1.0' in metrics, metrics


@pytest.mark.integration
def test_when_every_replica_is_marked_down_requests_still_go_to_them(tmp_path: Path) -> None:
    with (
        RecordingReplica(health_status=503) as first,
        RecordingReplica(health_status=503) as second,
        RouterProcess(
            replicas={"r1": first.url, "r2": second.url},
            state_dir=tmp_path,
            health={"interval_s": 0.1, "failures": 1},
        ) as router,
        router.admin() as admin,
    ):
        eventually(
            lambda: all(r.state == "unhealthy" for r in admin.replicas()), what="every replica marked down"
        )
        response = httpx.post(f"{router.url}/v1/chat/completions", json=CHAT, timeout=30)
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        assert "pcache_panic_routes_total 1.0" in httpx.get(f"{router.url}/metrics", timeout=10).text
