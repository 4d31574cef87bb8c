"""Snapshots of the main screen and the drain modal, on fixed data and a frozen clock."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from pcache_console.app import TopApp
from tests.console.conftest import fake_app, screen_name, until
from tests.console.fleet_data import FakeRouter

SIZE = (150, 44)


async def _loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, TopApp)
    await until(pilot, lambda: app.polls >= 1)


def test_main_screen(snap_compare: Any) -> None:
    app = fake_app(FakeRouter())
    assert snap_compare(app, terminal_size=SIZE, run_before=_loaded)


def test_drain_modal_shows_blast_radius_with_cancel_focused(snap_compare: Any) -> None:
    fake = FakeRouter()
    app = fake_app(fake)

    async def open_drain(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        await pilot.press("down", "down", "down", "down")  # r5: owns Tier-1 prefixes in this data
        await pilot.press("d")
        await until(pilot, lambda: screen_name(pilot.app) == "ConfirmScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=open_drain)
    assert fake.writes == []
