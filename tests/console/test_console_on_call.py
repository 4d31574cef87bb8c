"""What an on-call SRE relies on in `pcache top`: the key columns at 80x24, error rates, stale rows
dimmed with their age, call-outs that say how many more there are, and live drain dialogs with a
capacity check."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.widgets import Static

from pcache.testing.fake_admin import FakeRouter, incident
from pcache_console.screens.confirm import ConfirmScreen
from pcache_console.widgets.fleet import ALL_ROW, FleetTable, columns_for
from pcache_console.widgets.header import StatusHeader
from tests.console.conftest import fake_app, screen_name, text_of, until


def _fleet(app: App[Any]) -> FleetTable:
    return app.query_one("#fleet", FleetTable)


def _visible(app: App[Any], key: str) -> str:
    """The row as the terminal shows it: cut at the table's width."""
    table = _fleet(app)
    return table.row_text(key).plain[: table.scrollable_content_region.width]


def _dimmed(table: FleetTable, key: str) -> bool:
    """Whether the whole row is dim (not just a part of it, like a KV bar's empty cells)."""
    row = table.row_text(key)
    return any(span.style == "dim" and (span.start, span.end) == (0, len(row)) for span in row.spans)


async def test_80x24_keeps_state_kv_hit_ttft_and_errors_for_every_replica() -> None:
    fake = FakeRouter()
    fake.snapshot = incident(fake.snapshot)
    app = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        header = _fleet(app)._header.plain[: _fleet(app).scrollable_content_region.width]
        for title in ("state", "KV usage", "hit", "TTFT p95", "errors"):
            assert title in header, header
        for replica in fake.snapshot.replicas:
            row = _visible(app, replica.name)
            assert row.startswith(replica.name)
            if replica.kv_usage is not None:
                assert f"{replica.kv_usage * 100:.0f}%" in row, row
            if replica.hit_rate is not None:
                assert f"{replica.hit_rate * 100:.1f}%" in row, row
        assert "23%!" in _visible(app, "r2")  # the failing replica's error rate, marked
        assert "UP" in _visible(app, "r1") and "DOWN" in _visible(app, "r3")


def test_columns_are_dropped_least_important_first() -> None:
    narrow = [key for key, *_ in columns_for(78)]
    assert narrow == ["state", "kv", "hit", "ttft", "errors"]
    wide = [key for key, *_ in columns_for(400)]
    assert "kv_trend" in wide and "hit_trend" in wide
    middle = [key for key, *_ in columns_for(120)]
    assert "kv_trend" not in middle and {"sessions", "rps", "tier1"} <= set(middle)


async def test_the_header_keeps_stale_at_80_columns() -> None:
    fake = FakeRouter()
    app = fake_app(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        fake.down = True
        app.poll_now()
        await until(pilot, lambda: "STALE" in text_of(app.query_one(StatusHeader)))
        assert text_of(app.query_one(StatusHeader)).index("STALE") < 60


async def test_with_the_router_down_rows_are_dimmed_with_their_age() -> None:
    fake = FakeRouter()
    now = [1_790_000_000.0]
    app = fake_app(fake)
    app._clock = lambda: now[0]
    async with app.run_test(size=(150, 44)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        assert "UP " in _visible(app, "r1") and "UP 0s" not in _visible(app, "r1")
        fake.down = True
        now[0] += 75
        app.poll_now()
        await until(pilot, lambda: "UP 1m" in _visible(app, "r1"))
        assert _dimmed(_fleet(app), "r1")
        assert "old 1m" in _visible(app, ALL_ROW)
        fake.down = False
        app.poll_now()
        await until(pilot, lambda: "UP 1m" not in _visible(app, "r1"))
        assert not _dimmed(_fleet(app), "r1")


async def test_more_call_outs_than_fit_end_with_how_many_more() -> None:
    fake = FakeRouter()
    fake.snapshot = incident(fake.snapshot)
    app = fake_app(fake)
    async with app.run_test(size=(150, 44)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        shown = text_of(app.query_one("#callouts", Static))
        assert shown.splitlines()[0].strip().startswith("! r2: 23% of attempts failed")
        assert "+3 more" in shown
        assert len(shown.strip().splitlines()) == 3


async def test_the_drain_dialog_stays_live_and_checks_the_group_s_capacity() -> None:
    fake = FakeRouter()
    rows = [
        r.model_copy(update={"group": "support", "kv_usage": 0.93, "waiting": 6})
        if r.name in ("r1", "r2")
        else r
        for r in fake.snapshot.replicas
    ]
    fake.snapshot = fake.snapshot.model_copy(update={"replicas": rows})
    app = fake_app(fake, refresh_s=0.25)
    async with app.run_test(size=(150, 44)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("d")  # the cursor starts on r1
        await until(pilot, lambda: screen_name(app) == "ConfirmScreen")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        body = text_of(dialog.query_one("#dialog-body", Static))
        assert "1 other routable replica(s) in group support" in body
        assert "the rest of group support is at 93% KV usage" in body
        polls = app.polls
        await until(pilot, lambda: app.polls > polls + 1 and dialog.recomputed >= 1)
        asked = [p for m, p in fake.requests if p == "/api/v1/replicas/r1/blast-radius"]
        assert len(asked) >= 2  # the blast radius was asked again while the dialog was open
        await pilot.press("escape")
        assert fake.writes == []


async def test_the_event_view_lists_the_router_s_events_and_keeps_up() -> None:
    from pcache.api import RouterEvent
    from pcache_console.screens.events import EventsScreen

    fake = FakeRouter()
    app = fake_app(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("e")
        await until(pilot, lambda: screen_name(app) == "EventsScreen")
        screen = app.screen
        assert isinstance(screen, EventsScreen)
        body = text_of(screen.query_one("#events-body", Static))
        assert "drain of r4" in body and "FAILED" in body and "r3: healthy -> unhealthy" in body
        fake.events.append(
            RouterEvent(id=5, t=fake.events[-1].t + 1, kind="undrain", message="r4 undrained", replica="r4")
        )
        app.poll_now()
        await until(pilot, lambda: "r4 undrained" in text_of(screen.query_one("#events-body", Static)))
        await pilot.press("escape")
        await until(pilot, lambda: screen_name(app) != "EventsScreen")


async def test_heat_map_rows_keep_their_places_and_show_numbers_until_o_re_sorts() -> None:
    from pcache_console.widgets.heatmap import HeatMap

    fake = FakeRouter()
    app = fake_app(fake)
    async with app.run_test(size=(150, 44)) as pilot:
        await until(pilot, lambda: app.polls >= 1)
        heat = app.query_one(HeatMap)
        first = heat.keys
        heat.focus()
        await pilot.press("down", "down")
        chosen = heat.selected_key
        assert chosen == first[2]
        row = heat.prefixes[first[0]]
        share = row.by_replica[row.owners[0]].share
        assert f"{round(share * 100):2d}o" in heat.cells_of(first[0])  # a number, not only a shade
        fake.heat = fake.heat.model_copy(update={"prefixes": list(reversed(fake.heat.prefixes))})
        polls = app.polls
        app.poll_now()
        await until(pilot, lambda: app.polls > polls)
        assert heat.keys == first and heat.selected_key == chosen  # nothing moved under the cursor
        await pilot.press("o")
        assert heat.keys == list(reversed(first)) and heat.selected_key == chosen
