"""Shared pieces of the console tests: an app wired to a fake router, and awaiting conditions."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Static

from pcache.client import AdminClient
from pcache.testing.fake_admin import FROZEN_NOW, FakeRouter
from pcache_console.app import TopApp
from pcache_console.source import RouterSource


async def until(pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds; fail with a clear message at the deadline (30 s:
    a real router polled on a loaded 2-core machine can take several seconds per round)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await pilot.pause(0.02)
    await pilot.pause()


def fake_app(fake: FakeRouter, *, readonly: bool = False, refresh_s: float = 60.0) -> TopApp:
    """A console on a frozen clock, talking to ``fake`` through httpx.MockTransport."""
    client = AdminClient("http://127.0.0.1:8081", transport=fake.transport())
    source = RouterSource(client, clock=lambda: FROZEN_NOW)
    return TopApp(source, refresh_s=refresh_s, readonly=readonly, clock=lambda: FROZEN_NOW)


@pytest.fixture
def fake_router() -> FakeRouter:
    return FakeRouter()


def screen_name(app: App[Any]) -> str:
    return type(app.screen).__name__


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text (Rich renderables rendered at a fixed width)."""
    content = widget.content
    if isinstance(content, Text):
        return content.plain
    if isinstance(content, str):
        return content
    console = Console(width=160, record=True, file=io.StringIO(), color_system=None)
    console.print(content)
    return console.export_text()


__all__ = ["fake_app", "screen_name", "text_of", "until"]
