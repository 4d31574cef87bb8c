"""Snapshots of the main screen (healthy, incident, router down) at 80x24, 120x40 and 200x50, and of
the drain modal, on fixed data and a frozen clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from pcache.testing.fake_admin import FakeRouter, incident
from pcache_console.app import TopApp
from pcache_console.widgets.header import StatusHeader
from tests.console.conftest import fake_app, screen_name, text_of, until

SIZE = (150, 44)
SIZES = {"80x24": (80, 24), "120x40": (120, 40), "200x50": (200, 50)}


async def _loaded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, TopApp)
    await until(pilot, lambda: app.polls >= 1)


def _state(name: str, fake: FakeRouter) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Prepare ``fake`` for the state and return what to run before the snapshot."""
    if name == "incident":
        fake.snapshot = incident(fake.snapshot)
    if name != "router-down":
        return _loaded

    async def router_down(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        fake.down = True
        app = pilot.app
        assert isinstance(app, TopApp)
        app.poll_now()
        await until(pilot, lambda: "STALE" in text_of(app.query_one(StatusHeader)))

    return router_down


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("state", ["healthy", "incident", "router-down"])
def test_main_screen(snap_compare: Any, state: str, size: str) -> None:
    fake = FakeRouter()
    run_before = _state(state, fake)
    assert snap_compare(fake_app(fake), terminal_size=SIZES[size], run_before=run_before)


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


def test_event_log_view(snap_compare: Any) -> None:
    async def open_events(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        await pilot.press("e")
        await until(pilot, lambda: screen_name(pilot.app) == "EventsScreen")

    assert snap_compare(fake_app(FakeRouter()), terminal_size=(120, 40), run_before=open_events)
