"""The console against a real router and simulated fleet on loopback (pilot tests).

The admin client gets a recording transport that forwards to the real network, so a test can
check what the console sent as well as what the router did.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from textual.widgets import Button, Input, Static

from pcache.api import PinIn
from pcache.client import AdminClient
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet
from pcache_console.app import TopApp
from pcache_console.screens.confirm import ConfirmScreen
from pcache_console.screens.forms import PinScreen, PrewarmScreen
from pcache_console.source import DirectSource, RouterSource
from pcache_console.widgets.heatmap import HeatMap
from tests.console.conftest import text_of, until

pytestmark = pytest.mark.integration

SIZE = (150, 44)
PINNED_TEXT = "You are the pinned assistant of the support team; answer in one short paragraph. " * 4


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, with a list of (method, path?query) of every request sent."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[tuple[str, str]] = []
        self._dry_runs: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = (request.method, request.url.raw_path.decode())
        self.requests.append(sent)
        if request.content and json.loads(request.content).get("dry_run") is True:
            self._dry_runs.append(sent)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def writes(self) -> list[tuple[str, str]]:
        """Requests that change something: not reads, not dry runs (query flag or JSON field)."""
        writes = [(m, p) for m, p in self.requests if m != "GET" and "dry_run" not in p]
        for dry in self._dry_runs:
            writes.remove(dry)
        return writes


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=4) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def shared_router(sim: SimFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path_factory.mktemp("router")) as process:
        yield process


@pytest.fixture
def router(shared_router: RouterProcess) -> RouterProcess:
    """The module's router, with every replica routable and no operator pins (one start per module)."""
    with shared_router.admin() as admin:
        for replica in admin.replicas():
            if replica.state in ("draining", "drained"):
                admin.undrain(replica.name)
        for pin in admin.pins():
            if pin.source == "pin":
                admin.unpin(pin.name)
        assert {r.state for r in admin.replicas()} == {"healthy"}
    return shared_router


def console(router: RouterProcess, *, readonly: bool = False) -> tuple[TopApp, RecordingTransport]:
    transport = RecordingTransport()
    client = AdminClient(router.admin_url, token=router.token, transport=transport)
    return TopApp(RouterSource(client), refresh_s=0.5, readonly=readonly), transport


def state_of(router: RouterProcess, name: str) -> str:
    with router.admin() as admin:
        return next(r.state for r in admin.replicas() if r.name == name)


def fleet_order(app: TopApp) -> list[str]:
    return app.fleet.keys


async def test_table_fills_with_every_replica_and_the_all_row(router: RouterProcess) -> None:
    app, _ = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        assert fleet_order(app) == ["r1", "r2", "r3", "r4", "ALL"]
        assert "policy tiered" in text_of(app.query_one("#header", Static))
        assert "UP" in app.fleet.row_text("r1").plain


async def test_drain_through_the_modal_drains_the_replica_in_the_router(router: RouterProcess) -> None:
    app, transport = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        await pilot.press("down", "d")  # r2
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.focused is not None and app.focused.id == "cancel"
        assert ("GET", "/api/v1/replicas/r2/blast-radius") in transport.requests
        await pilot.press("right", "enter")  # move to the drain button and press it
        await until(pilot, lambda: state_of(router, "r2") in ("draining", "drained"))
        await until(pilot, lambda: "DRAIN" in app.fleet.row_text("r2").plain)
        assert transport.writes == [("POST", "/api/v1/replicas/r2/drain")]
        assert "r2 is drain" in text_of(app.query_one("#flash", Static))


async def test_cancel_in_the_drain_modal_sends_nothing(router: RouterProcess) -> None:
    app, transport = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        await pilot.press("down", "down", "d")  # r3
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")  # the focus opens on Cancel
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        polls = app.polls
        await until(pilot, lambda: app.polls > polls)  # polling resumed after the modal closed
        assert transport.writes == []
        assert state_of(router, "r3") == "healthy"
        assert "nothing sent" in text_of(app.query_one("#flash", Static))


async def test_readonly_blocks_every_action_key(router: RouterProcess) -> None:
    app, transport = console(router, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        await pilot.press("down", "d", "U", "p", "u", "w")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "Screen"
        assert {method for method, _ in transport.requests} == {"GET"}
        assert state_of(router, "r2") == "healthy"


async def test_filter_narrows_rows_and_escape_restores_them(router: RouterProcess) -> None:
    app, _ = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        await pilot.press("slash", "r", "3")
        await until(pilot, lambda: fleet_order(app) == ["r3", "ALL"])
        await pilot.press("escape")
        await until(pilot, lambda: fleet_order(app) == ["r1", "r2", "r3", "r4", "ALL"])


async def test_sort_keys_reorder_rows_and_flip_direction(router: RouterProcess) -> None:
    with router.admin() as admin:
        admin.drain("r3")
    app, _ = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5 and "DRAIN" in app.fleet.row_text("r3").plain)
        await pilot.press("N")  # name again: descending
        assert fleet_order(app) == ["r4", "r3", "r2", "r1", "ALL"]
        await pilot.press("S")  # state: not-routable first
        assert fleet_order(app)[0] == "r3" and fleet_order(app)[-1] == "ALL"


async def test_heat_map_marks_a_pinned_prefix_on_its_replicas(router: RouterProcess) -> None:
    with router.admin() as admin:
        admin.pin("support", PinIn(text=PINNED_TEXT, replicas=["r2", "r4"]))
    app, _ = console(router)
    async with app.run_test(size=SIZE) as pilot:
        heat = app.query_one(HeatMap)
        await until(pilot, lambda: "support" in {p.name for p in heat.prefixes.values()})
        key = next(k for k, p in heat.prefixes.items() if p.name == "support")
        cells = heat.cells_of(key)  # three characters per replica: r1 r2 r3 r4
        assert [cells[i * 3 + 2] for i in range(4)] == [" ", "P", " ", "P"]
        assert heat.selected is not None


async def test_pin_through_the_modal_pins_the_prefix_in_the_router(
    router: RouterProcess, tmp_path: Path
) -> None:
    with router.admin() as admin:
        admin.pin("support", PinIn(text=PINNED_TEXT, replicas=["r1"]))
    prefix_file = tmp_path / "support.txt"
    prefix_file.write_text(PINNED_TEXT)
    app, transport = console(router)
    async with app.run_test(size=SIZE) as pilot:
        heat = app.query_one(HeatMap)
        await until(pilot, lambda: heat.row_count >= 1)
        heat.focus()
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, PinScreen))
        assert app.focused is not None and app.focused.id == "cancel"
        app.screen.query_one("#pin-replicas", Input).value = "r3"
        app.screen.query_one("#pin-file", Input).value = str(prefix_file)
        app.screen.query_one("#confirm", Button).press()
        await until(pilot, lambda: "pinned support" in text_of(app.query_one("#flash", Static)))
        assert transport.writes == [("PUT", "/api/v1/pins/support")]
        with router.admin() as admin:
            await until(
                pilot, lambda: next(p for p in admin.pins() if p.name == "support").replicas == ["r3"]
            )


async def test_direct_mode_fills_the_table_and_disables_router_actions(sim: SimFleet) -> None:
    app = TopApp(DirectSource([f"{n}={u}" for n, u in sim.urls.items()]), refresh_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        assert fleet_order(app) == ["r1", "r2", "r3", "r4", "ALL"]
        for action in ("drain", "undrain", "pin", "unpin", "prewarm"):
            assert app.check_action(action, ()) is None
        await pilot.press("d")
        assert type(app.screen).__name__ == "Screen"


async def test_undrain_through_the_modal_makes_the_replica_routable_again(router: RouterProcess) -> None:
    with router.admin() as admin:
        admin.drain("r4")
    app, transport = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "r4" in app.fleet and "DRAIN" in app.fleet.row_text("r4").plain)
        await pilot.press("end", "up", "U")  # r4 (the ALL row is last)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("right", "enter")
        await until(pilot, lambda: "UP" in app.fleet.row_text("r4").plain)
        assert state_of(router, "r4") == "healthy"
        assert transport.writes == [("POST", "/api/v1/replicas/r4/undrain")]


async def test_prewarm_through_the_modals_plans_then_runs_a_job(
    router: RouterProcess, tmp_path: Path
) -> None:
    prefix_file = tmp_path / "prefixes.txt"
    prefix_file.write_text(PINNED_TEXT + "\n")
    app, transport = console(router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, PrewarmScreen))
        app.screen.query_one("#prewarm-file", Input).value = str(prefix_file)
        app.screen.query_one("#prewarm-copies", Input).value = "2"
        app.screen.query_one("#confirm", Button).press()
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))  # the plan, dry run
        plan = text_of(app.screen.query_one("#dialog-body", Static))
        assert plan.count("→") == 1 and "2 (prefix, replica) pairs" in plan
        assert transport.writes == []
        await pilot.press("right", "enter")
        await until(pilot, lambda: "done: 2/2 done" in text_of(app.query_one("#flash", Static)), timeout=20)
        assert [m for m, p in transport.writes] == ["POST"]
        with router.admin() as admin:
            jobs = {job.id: job for job in admin.prewarm_jobs()}
        job_id = text_of(app.query_one("#flash", Static)).split("prewarm ", 1)[1].split()[0]
        assert jobs[job_id].state == "done" and jobs[job_id].total == 2


async def test_a_router_that_stops_answering_shows_stale_then_recovers(router: RouterProcess) -> None:
    assert router.process is not None
    client = AdminClient(router.admin_url, token=router.token, timeout=0.5)
    app = TopApp(RouterSource(client), refresh_s=0.25)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 5)
        router.process.send_signal(signal.SIGSTOP)  # the router process freezes: polls time out
        try:
            await until(pilot, lambda: "STALE" in text_of(app.query_one("#header", Static)))
            assert app.fleet.row_count == 5  # the last known rows stay
        finally:
            router.process.send_signal(signal.SIGCONT)
        await until(pilot, lambda: "STALE" not in text_of(app.query_one("#header", Static)))
        assert "answering again" in text_of(app.query_one("#flash", Static))


async def test_unpin_through_the_modal_removes_the_pin_in_the_router(router: RouterProcess) -> None:
    with router.admin() as admin:
        admin.pin("support", PinIn(text=PINNED_TEXT, replicas=["r2"]))
    app, transport = console(router)
    async with app.run_test(size=SIZE) as pilot:
        heat = app.query_one(HeatMap)
        await until(pilot, lambda: "support" in {p.name for p in heat.prefixes.values()})
        key = next(k for k, p in heat.prefixes.items() if p.name == "support")
        heat.focus()
        heat.move_cursor(heat.keys.index(key))
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("right", "enter")
        await until(pilot, lambda: "unpinned support" in text_of(app.query_one("#flash", Static)))
        assert transport.writes == [("DELETE", "/api/v1/pins/support")]
        with router.admin() as admin:
            assert "support" not in {pin.name for pin in admin.pins()}
