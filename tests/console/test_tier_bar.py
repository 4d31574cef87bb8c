"""The drill-down's tier bar: the hit rate split by KV tier in one bar, then the shares in words."""

from __future__ import annotations

from pcache_console.cells import tier_bar


def test_tier_bar_fills_each_tiers_share_in_its_colour_and_names_the_shares() -> None:
    bar = tier_bar({"gpu": 0.5, "host": 0.0, "disk": 0.0, "peer": 0.0, "pool": 0.25}, width=20)
    assert bar.plain.startswith("█" * 15 + "░" * 5)
    assert bar.plain.endswith("gpu 50% pool 25%")
    styles = {span.style for span in bar.spans}
    assert {"green", "blue"} <= styles


def test_tier_bar_without_tiers_or_hits() -> None:
    assert tier_bar(None).plain == "-"
    assert tier_bar({"gpu": 0.0, "pool": 0.0}, width=4).plain == "░░░░ no hits"
