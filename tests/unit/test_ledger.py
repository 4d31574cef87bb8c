"""The ledger counts traffic by prefix and replica, drift by cause, and stays bounded."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint
from pcache.fleet_view import Tier1Prefix
from pcache.ledger import Ledger
from pcache.policy.base import Decision, DriftCause, DriftEvent, Outcome, Reason


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fp(
    blocks: tuple[int, ...], session: str | None, tier1: str | None = None, tokens: int = 640
) -> Fingerprint:
    return Fingerprint(
        blocks=blocks,
        session=session,
        prompt_tokens=tokens,
        tier1=tier1,
        tier1_blocks=3 if tier1 else 0,
        block_tokens=64,
    )


def decision(replica: str | None, *, cached_blocks: int = 0, drift: DriftCause | None = None) -> Decision:
    event = DriftEvent(session="s", old_home="r1", new_home=replica or "", cause=drift) if drift else None
    return Decision(
        policy="tiered",
        replica=replica,
        reason=Reason.SESSION_HOME,
        candidates=(),
        predicted_cached_blocks=cached_blocks,
        drift=event,
    )


def test_tier1_traffic_shows_in_the_heat_map_with_shares_and_marks() -> None:
    clock = Clock()
    ledger = Ledger(window_s=10, clock=clock)
    prefix = Tier1Prefix(name="sys", blocks=(1, 2, 3), pinned=("r1", "r2"), source="pin")
    for i in range(6):
        ledger.record_route(fp((1, 2, 3, 100 + i), f"s{i}", tier1="sys"), decision("r1" if i < 4 else "r2"))
    heat = ledger.heat(10, {"sys": prefix}, {"sys": ["r1", "r2"]}, texts={"sys": "You are a helpful bot"})
    [row] = heat.prefixes
    assert row.name == "sys" and row.kind == "pinned" and row.requests == 6
    assert row.text_head == "You are a helpful bot"
    assert row.sessions == 6
    assert row.by_replica["r1"].requests == 4
    assert abs(row.by_replica["r1"].share - 4 / 6) < 1e-9
    assert row.by_replica["r2"].pinned and row.by_replica["r2"].owner
    assert heat.replicas == ["r1", "r2"]


def test_a_copies_pin_marks_its_owners_pinned_in_the_heat_map() -> None:
    clock = Clock()
    ledger = Ledger(window_s=10, clock=clock)
    prefix = Tier1Prefix(name="sys", blocks=(1, 2, 3), copies=2, source="pin")
    ledger.record_route(fp((1, 2, 3, 100), "s0", tier1="sys"), decision("r3"))
    heat = ledger.heat(10, {"sys": prefix}, {"sys": ["r3", "r4"]}, fleet=["r1", "r2", "r3", "r4"])
    [row] = heat.prefixes
    assert row.kind == "pinned"
    assert {name for name, cell in row.by_replica.items() if cell.pinned} == {"r3", "r4"}
    assert row.by_replica["r3"].requests == 1 and row.by_replica["r4"].requests == 0
    config = Tier1Prefix(name="sys", blocks=(1, 2, 3), copies=2, source="config")  # not an operator pin
    [plain] = ledger.heat(10, {"sys": config}, {"sys": ["r3", "r4"]}).prefixes
    assert plain.kind == "registered" and not any(cell.pinned for cell in plain.by_replica.values())


def test_registered_prefix_without_traffic_still_appears() -> None:
    ledger = Ledger(clock=Clock())
    prefix = Tier1Prefix(name="tools", blocks=(7, 8), copies=2, source="config")
    heat = ledger.heat(5, {"tools": prefix}, {"tools": ["r3", "r4"]})
    [row] = heat.prefixes
    assert row.kind == "registered" and row.requests == 0 and row.owners == ["r3", "r4"]
    assert set(row.by_replica) == {"r3", "r4"}
    assert heat.replicas == ["r3", "r4"]
    everyone = ledger.heat(5, {"tools": prefix}, {"tools": ["r3", "r4"]}, fleet=["r1", "r2", "r3", "r4"])
    assert everyone.replicas == ["r1", "r2", "r3", "r4"]


def test_prefix_shared_by_many_sessions_becomes_a_hot_candidate() -> None:
    ledger = Ledger(hot_min_sessions=4, clock=Clock())
    shared = (11, 12, 13)
    for i in range(12):
        ledger.record_route(fp((*shared, 500 + i, 600 + i), f"s{i}"), decision(f"r{i % 3}"))
    hot = ledger.hot_prefixes()
    assert hot, "a prefix seen from 12 sessions must be a hot candidate"
    assert hot[0].blocks == shared
    assert hot[0].sessions >= 4
    assert 0 < hot[0].share <= 1


def test_one_off_prompts_are_counted_but_not_listed() -> None:
    ledger = Ledger(hot_min_sessions=4, clock=Clock())
    for i in range(20):
        ledger.record_route(fp((1000 + i, 2000 + i), f"s{i}"), decision("r1"))
    assert ledger.requests_total() == 20
    assert ledger.requests_total("r1") == 20
    assert ledger.hot_prefixes() == []
    assert ledger.heat(10, {}, {}).prefixes == []


def test_drift_ratio_and_moves_by_cause() -> None:
    clock = Clock()
    ledger = Ledger(window_s=10, clock=clock)
    for i in range(8):
        ledger.record_route(fp((i,), "s"), decision("r1"))
    ledger.record_route(fp((9,), "s"), decision("r2", drift=DriftCause.DRAIN))
    ledger.record_route(fp((10,), "s"), decision("r2", drift=DriftCause.OVERLOAD))
    assert ledger.drift_ratio() == 2 / 10
    assert ledger.moves_by_cause() == {"drain": 1, "overload": 1}
    series = ledger.drift(60)
    assert series.points[-1].moves == 2
    assert series.moves_by_cause == {"drain": 1, "overload": 1}


def test_drift_series_has_one_point_per_window_including_empty_ones() -> None:
    clock = Clock(1000.0)
    ledger = Ledger(window_s=10, clock=clock)
    ledger.record_route(fp((1,), "a"), decision("r1"))
    clock.t = 1035.0
    ledger.record_route(fp((2,), "a"), decision("r1"))
    series = ledger.drift(40)
    assert [p.requests for p in series.points] == [1, 0, 0, 1]
    assert series.window_s == 10


def test_engine_hit_rate_is_token_weighted_over_recent_windows() -> None:
    clock = Clock()
    ledger = Ledger(window_s=10, recent_windows=3, clock=clock)
    ledger.record_engine_counters("r1", queries_delta=1000, hits_delta=900)
    ledger.record_engine_counters("r2", queries_delta=3000, hits_delta=100)
    assert ledger.hit_rate() == 1000 / 4000
    assert ledger.hit_rate(replica="r1") == 0.9
    clock.t += 100  # everything falls out of the recent windows
    assert ledger.hit_rate() is None


def test_predicted_and_reported_cached_tokens() -> None:
    ledger = Ledger(clock=Clock())
    f = fp((1, 2, 3, 4), "s", tokens=640)
    d = decision("r1", cached_blocks=5)  # 5 * 64 = 320 predicted
    ledger.record_route(f, d)
    ledger.record_outcome(f, d, Outcome(replica="r1", ok=True, cached_tokens=256, prompt_tokens=640))
    assert ledger.predicted_hit_rate() == 320 / 640
    assert ledger.reported_cached_ratio() == 256 / 640


def test_requests_per_s_uses_the_time_actually_covered() -> None:
    clock = Clock(1000.0)
    ledger = Ledger(window_s=10, recent_windows=6, clock=clock)
    clock.t = 1005.0
    for _ in range(50):
        ledger.record_route(fp((1,), None), decision("r1"))
    assert abs(ledger.requests_per_s() - 50 / 5) < 1e-6
    assert ledger.requests_per_s("r2") == 0


def test_history_and_prefix_tables_stay_bounded() -> None:
    clock = Clock(0.0)
    ledger = Ledger(window_s=1, history=5, max_prefixes=50, hot_min_sessions=1, clock=clock)
    for i in range(2000):
        clock.t = float(i)
        ledger.record_route(fp((i, i + 1), f"s{i}", tier1=f"p{i}"), decision("r1"))
    assert len(ledger._windows) <= 5
    assert len(ledger._prefixes) <= 50
