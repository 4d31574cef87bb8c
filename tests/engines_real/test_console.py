"""``pcache top`` (the Textual console, through the pilot) against the router and two real engines."""

from __future__ import annotations

from textual.widgets import Static

from pcache.client import AdminClient
from pcache_console.app import TopApp
from pcache_console.source import RouterSource
from tests.console.conftest import text_of, until
from tests.engines_real.stack import EnginePair
from tests.engines_real.traffic import chat, prose
from tests.harness.router import RouterProcess


async def test_top_shows_both_engines_up_with_the_fleet_row(router: RouterProcess, fleet: EnginePair) -> None:
    for n in range(4):
        messages = [
            {"role": "system", "content": prose(f"console-{n}", 1000)},
            {"role": "user", "content": "q"},
        ]
        chat(router.url, messages, session=f"console-{n}")
    app = TopApp(RouterSource(AdminClient(router.admin_url, token=router.token)), refresh_s=0.5)
    async with app.run_test(size=(150, 44)) as pilot:
        await until(pilot, lambda: app.fleet.row_count == 3, timeout=30)
        assert app.fleet.keys == ["e1", "e2", "ALL"]
        for name in ("e1", "e2"):
            assert "UP" in app.fleet.row_text(name).plain, app.fleet.row_text(name).plain
        assert "policy tiered" in text_of(app.query_one("#header", Static))
