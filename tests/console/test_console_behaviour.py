"""Console behaviour on a fake admin API (httpx.MockTransport): staleness, pause, refresh keys,
read-only mode, drill-down, the command palette, and the no-terminal path of ``pcache top``."""

from __future__ import annotations

import subprocess
import sys
import typing
from typing import Any

import httpx
import pytest
from textual.app import App
from textual.widgets import Static
from typer.testing import CliRunner

from pcache.api import ReplicaStateName, ReplicaStatus
from pcache.testing.fake_admin import FakeRouter
from pcache_cli.context import CliContext
from pcache_cli.main import app as cli_app
from pcache_console.app import REFRESH_STEPS
from pcache_console.screens.help import HelpScreen
from pcache_console.widgets.header import StatusHeader
from tests.console.conftest import fake_app, screen_name, text_of, until

SIZE = (150, 44)


def _header(app: App[Any]) -> str:
    return text_of(app.query_one(StatusHeader))


def _flash(app: App[Any]) -> str:
    return text_of(app.query_one("#flash", Static))


async def test_router_going_away_shows_stale_then_recovers(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        assert "STALE" not in _header(app)
        fake_router.down = True
        app.poll_now()
        await until(pilot, lambda: "STALE" in _header(app))
        assert "router unreachable" in _flash(app)
        assert app.fleet.row_count == 7  # the last rows stay on screen while the router is away
        fake_router.down = False
        app.poll_now()
        await until(pilot, lambda: "STALE" not in _header(app))
        assert "answering again" in _flash(app)


async def test_space_pauses_polling_and_resumes(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("space")
        assert "PAUSED" in _header(app)
        before = len(fake_router.requests)
        app.poll_now()
        await pilot.pause(0.1)
        assert len(fake_router.requests) == before
        await pilot.press("space")
        await until(pilot, lambda: app.polls >= 2)
        assert "PAUSED" not in _header(app)


async def test_ctrl_c_quits_like_q(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running)


async def test_refresh_keys_step_and_clamp(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router, refresh_s=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("minus")
        assert app.refresh_s == 1.0
        await pilot.press(*["minus"] * 12)
        assert app.refresh_s == REFRESH_STEPS[0]
        await pilot.press(*["plus"] * 20)
        assert app.refresh_s == REFRESH_STEPS[-1]
        assert f"every {REFRESH_STEPS[-1]:g}s" in _header(app)


async def test_readonly_greys_out_actions_in_help_and_palette(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        for action in ("drain", "undrain", "pin", "unpin", "prewarm"):
            assert app.check_action(action, ()) is None  # shown, but disabled
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert "Drain replica" not in titles and "Sort by KV usage" in titles
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = " ".join(text_of(w) for w in app.screen.query(Static))
        assert "disabled: --readonly" in text
        await pilot.press("escape")
        await pilot.press("d")
        await pilot.pause()
        assert screen_name(app) == "Screen" and fake_router.writes == []


async def test_enter_drills_into_a_replica_and_escape_returns(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("down", "enter")
        await until(pilot, lambda: screen_name(app) == "ReplicaScreen")
        stats = text_of(app.screen.query_one("#replica-stats", Static))
        assert "http://127.0.0.1:8102" in stats  # r2's URL
        prefixes = text_of(app.screen.query_one("#replica-prefixes", Static))
        assert "prefix-0" in prefixes
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "Screen")
        assert app.fleet.selected_name == "r2"


def test_no_terminal_prints_the_status_table_and_a_hint() -> None:
    fake = FakeRouter()
    result = CliRunner().invoke(
        cli_app, ["top"], obj=CliContext(transport=httpx.MockTransport(fake.handle)), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "r1" in result.stdout and "ALL" in result.stdout
    assert "needs a terminal" in result.stderr
    assert [path for _, path in fake.requests] == ["/api/v1/status"]


def test_cli_import_does_not_load_textual() -> None:
    code = "import sys, pcache_cli.main; print('textual' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


async def test_no_color_keeps_the_meaning_in_words(
    fake_router: FakeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        assert app.no_color
        rows = {name: app.fleet.row_text(name).plain for name in app.fleet.keys}
        assert "FULL" in rows["r5"] and "91%" in rows["r5"]
        assert "high" in rows["r6"] and "72%" in rows["r6"]
        assert "DOWN" in rows["r3"] and "STALE" in rows["r4"]


async def test_command_palette_runs_the_drain_action(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: screen_name(app) == "CommandPalette")
        await pilot.press(*"Drain replica", "enter")
        await until(pilot, lambda: screen_name(app) == "ConfirmScreen")
        assert ("GET", "/api/v1/replicas/r1/blast-radius") in fake_router.requests
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) == "Screen")
        assert fake_router.writes == []


async def test_a_body_that_does_not_parse_is_reported_not_fatal(fake_router: FakeRouter) -> None:
    app = fake_app(fake_router)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        fake_router.heat = None  # type: ignore[assignment]  # the fake now answers prefixes with null
        fake_router.snapshot_json_override = {"router": {"policy": 3}}
        app.poll_now()
        await until(pilot, lambda: "STALE" in _header(app))
        assert "validation error" in _flash(app)
        fake_router.snapshot_json_override = None
        app.poll_now()
        await until(pilot, lambda: "STALE" not in _header(app))
        assert "prefixes:" in _flash(app)  # the heat map still fails: a warning on the flash line
        assert app.fleet.row_count == 7


@pytest.mark.parametrize("state", typing.get_args(ReplicaStateName))
def test_every_replica_state_has_a_word_in_the_console_and_a_style_in_the_cli(
    state: ReplicaStateName,
) -> None:
    from pcache_cli.output import STATE_STYLES
    from pcache_console.cells import state_label

    replica = ReplicaStatus(name="r1", url="http://127.0.0.1:1", engine="vllm", state=state)
    label = state_label(replica)
    assert label.plain and label.plain == label.plain.upper()
    assert state in STATE_STYLES
