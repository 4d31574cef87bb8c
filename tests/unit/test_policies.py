"""The six routing policies: choices, exclusions, load bounds, session homes and drift."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from pcache.fingerprint import Fingerprint, SessionSource
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView, Tier1Prefix
from pcache.policy import POLICY_NAMES, UnknownPolicyError, make_policy
from pcache.policy.base import DriftCause, Exclusion, Outcome, Reason
from pcache.policy.cache_aware import CacheAwarePolicy
from pcache.policy.prefix_hash import PrefixHashPolicy
from pcache.policy.tiered import TieredPolicy


def fleet(n: int = 4, loads: dict[str, int] | None = None, **states: ReplicaState) -> FleetView:
    loads = loads or {}
    return FleetView(
        tuple(
            ReplicaView(f"r{i}", state=states.get(f"r{i}", ReplicaState.HEALTHY), load=loads.get(f"r{i}", 0))
            for i in range(1, n + 1)
        )
    )


def fp(blocks: tuple[int, ...], session: str | None = None, **kw: object) -> Fingerprint:
    source = SessionSource.HEADER if session else SessionSource.NONE
    kw.setdefault("prompt_tokens", 64 * len(blocks))
    return Fingerprint(blocks=blocks, session=session, session_source=source, **kw)  # type: ignore[arg-type]


def test_policy_names_list_all_six_with_tiered_first() -> None:
    assert POLICY_NAMES[0] == "tiered"
    assert set(POLICY_NAMES) == {
        "tiered",
        "cache_aware",
        "prefix_hash",
        "session",
        "least_load",
        "round_robin",
    }
    for name in POLICY_NAMES:
        assert make_policy(name).name == name


def test_unknown_policy_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownPolicyError, match="valid policies: tiered, cache_aware"):
        make_policy("fastest")


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_skips_unroutable_replicas_and_lists_every_replica(name: str) -> None:
    policy = make_policy(name)
    view = fleet(5, r1=ReplicaState.DRAINING, r2=ReplicaState.UNHEALTHY, r3=ReplicaState.DRAINED)
    for i in range(30):
        decision = policy.route(fp((1, 100 + i), f"s{i}"), view)
        assert decision.replica in {"r4", "r5"}
        assert sorted(c.replica for c in decision.candidates) == ["r1", "r2", "r3", "r4", "r5"]
        excluded = {c.replica: c.excluded for c in decision.candidates}
        assert excluded["r1"] is Exclusion.DRAINING
        assert excluded["r2"] is Exclusion.UNHEALTHY
        assert excluded["r3"] is Exclusion.DRAINED
        assert decision.replica not in decision.fallbacks()


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_answers_no_replica_when_nothing_is_routable(name: str) -> None:
    view = fleet(2, r1=ReplicaState.UNHEALTHY, r2=ReplicaState.REMOVED)
    decision = make_policy(name).route(fp((1, 2), "s"), view)
    assert decision.replica is None
    assert decision.reason is Reason.NO_REPLICA
    assert {c.replica: c.excluded for c in decision.candidates} == {
        "r1": Exclusion.UNHEALTHY,
        "r2": Exclusion.REMOVED,
    }


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_explain_gives_the_route_decision_without_booking_it(name: str) -> None:
    policy = make_policy(name)
    view = fleet(4)
    for i in range(20):
        policy.route(fp((1, i, i + 1000), f"warm{i}"), view)
    request = fp((1, 77, 78), "s-explain")
    first = policy.explain(request, view)
    assert policy.explain(request, view) == first
    assert policy.route(request, view).replica == first.replica


def test_round_robin_cycles_over_routable_replicas() -> None:
    policy = make_policy("round_robin")
    view = fleet(3, r2=ReplicaState.DRAINING)
    assert [policy.route(fp((i,)), view).replica for i in range(4)] == ["r1", "r3", "r1", "r3"]


def test_least_load_takes_the_emptiest_replica() -> None:
    decision = make_policy("least_load").route(fp((1,), "s"), fleet(3, {"r1": 4, "r2": 1, "r3": 2}))
    assert (decision.replica, decision.reason) == ("r2", Reason.LEAST_LOAD)
    assert [c.replica for c in decision.candidates] == ["r2", "r3", "r1"]


def test_session_policy_is_sticky_and_overflows_past_the_load_bound() -> None:
    policy = make_policy("session")
    home = policy.route(fp((1,), "alice"), fleet(4)).replica
    assert home is not None
    assert all(policy.route(fp((i,), "alice"), fleet(4)).replica == home for i in range(10))
    busy = fleet(4, {home: 10})
    decision = policy.route(fp((1,), "alice"), busy)
    assert decision.replica != home
    assert decision.reason is Reason.OVERFLOW
    assert next(c for c in decision.candidates if c.replica == home).excluded is Exclusion.OVER_LOAD_BOUND


def test_prefix_hash_skips_a_first_block_shared_by_everyone() -> None:
    policy = PrefixHashPolicy()
    view = fleet(8)
    chosen = Counter(policy.route(fp((0, 1000 + i, 5000 + i)), view).replica for i in range(800))
    assert len(chosen) == 8  # block 0 alone would send everything to one replica
    assert max(chosen.values()) < 2 * 100


def test_prefix_hash_keeps_one_group_prefix_on_one_replica() -> None:
    policy = PrefixHashPolicy()
    view = fleet(8)
    for i in range(200):  # background traffic so the group prefix is a minority
        policy.route(fp((i % 50, 10_000 + i)), view)
    owners = {policy.route(fp((7, 8, 9, 20_000 + i)), view).replica for i in range(10)}
    assert len(owners) == 1


def test_prefix_hash_with_configured_skip_depth() -> None:
    policy = PrefixHashPolicy(skip_blocks=2)
    assert policy.prefix_key(fp((1, 2, 3, 4))) == 3
    assert policy.prefix_key(fp((1,))) == 1


def test_cache_aware_sends_a_repeated_prefix_to_the_replica_that_cached_it() -> None:
    policy = CacheAwarePolicy()
    view = fleet(4)
    first = policy.route(fp((1, 2, 3, 4), "a"), view)
    again = policy.route(fp((1, 2, 3, 4, 5), "b"), view)
    assert again.replica == first.replica
    assert (again.reason, again.predicted_cached_blocks) == (Reason.CACHE_MATCH, 4)


def test_cache_aware_spreads_unmatched_prompts_to_the_smallest_index() -> None:
    policy = CacheAwarePolicy()
    view = fleet(4)
    chosen = [policy.route(fp((100 * i + 1, 100 * i + 2)), view).replica for i in range(4)]
    assert sorted(chosen, key=str) == ["r1", "r2", "r3", "r4"]


def test_cache_aware_takes_the_shortest_queue_when_imbalanced() -> None:
    policy = CacheAwarePolicy(balance_abs_threshold=4, balance_rel_threshold=1.5)
    first = policy.route(fp((1, 2, 3)), fleet(3)).replica
    assert first is not None
    loads = {"r1": 3, "r2": 3, "r3": 3, first: 20}
    decision = policy.route(fp((1, 2, 3)), fleet(3, loads))
    assert decision.replica != first
    assert decision.reason is Reason.LEAST_LOAD


def test_cache_aware_index_evicts_least_recently_used_blocks_at_capacity() -> None:
    policy = CacheAwarePolicy()
    view = FleetView((ReplicaView("r1", cache_capacity_tokens=64 * 4),))
    policy.route(fp((1, 2)), view)
    policy.route(fp((3, 4)), view)
    policy.route(fp((5, 6)), view)  # capacity is 4 blocks: (1, 2) are evicted
    assert policy.matched_blocks((1, 2), view.replicas) == [0]
    assert policy.matched_blocks((5, 6), view.replicas) == [2]


def test_cache_aware_observe_forgets_blocks_a_failed_request_never_filled() -> None:
    policy = CacheAwarePolicy()
    view = fleet(1)
    request = fp((1, 2, 3))
    decision = policy.route(request, view)
    policy.observe(request, decision, Outcome(replica="r1", ok=False))
    assert policy.matched_blocks((1, 2, 3), view.replicas) == [0]


def test_cache_aware_observe_drops_oldest_predictions_when_the_engine_cached_less() -> None:
    policy = CacheAwarePolicy()
    view = fleet(1)
    policy.route(fp((50, 51)), view)
    policy.route(fp((1, 2, 3)), view)
    request = fp((1, 2, 3, 4))
    decision = policy.route(request, view)
    assert decision.predicted_cached_blocks == 3
    policy.observe(request, decision, Outcome(replica="r1", ok=True, cached_tokens=64))
    assert policy.matched_blocks((50, 51), view.replicas) == [0]
    assert policy.matched_blocks((1, 2, 3, 4), view.replicas) == [4]


def test_tiered_sends_a_session_home_and_records_it() -> None:
    policy = TieredPolicy()
    view = fleet(4)
    first = policy.route(fp((1, 2), "alice"), view)
    assert first.new_home and first.drift is None
    busy_but_fair = fleet(4, {"r1": 1, "r2": 1, "r3": 1, "r4": 1})
    again = policy.route(fp((1, 2, 3), "alice"), busy_but_fair)
    assert (again.replica, again.reason, again.new_home) == (first.replica, Reason.SESSION_HOME, False)
    assert policy.session_homes() == {first.replica: 1}


@pytest.mark.parametrize(
    ("state", "cause"),
    [
        (ReplicaState.DRAINING, DriftCause.DRAIN),
        (ReplicaState.DRAINED, DriftCause.DRAIN),
        (ReplicaState.UNHEALTHY, DriftCause.FAILURE),
        (ReplicaState.REMOVED, DriftCause.MEMBERSHIP),
    ],
)
def test_tiered_reports_drift_with_the_cause_when_the_home_cannot_serve(
    state: ReplicaState, cause: DriftCause
) -> None:
    policy = TieredPolicy()
    home = policy.route(fp((1,), "bob"), fleet(4)).replica
    assert home is not None
    states: dict[str, ReplicaState] = {home: state}
    decision = policy.route(fp((1,), "bob"), fleet(4, None, **states))
    assert decision.replica != home
    assert decision.drift is not None
    assert (decision.drift.old_home, decision.drift.new_home, decision.drift.cause) == (
        home,
        decision.replica,
        cause,
    )


def test_tiered_reports_membership_drift_when_the_home_left_the_fleet() -> None:
    policy = TieredPolicy()
    home = policy.route(fp((1,), "carol"), fleet(4)).replica
    smaller = FleetView(tuple(r for r in fleet(4).replicas if r.name != home))
    decision = policy.route(fp((1,), "carol"), smaller)
    assert decision.drift is not None and decision.drift.cause is DriftCause.MEMBERSHIP


def test_tiered_moves_an_overloaded_session_to_its_next_hrw_choice_with_overload_drift() -> None:
    policy = TieredPolicy()
    home = policy.route(fp((1,), "dave"), fleet(4)).replica
    assert home is not None
    decision = policy.route(fp((1,), "dave"), fleet(4, {home: 9}))
    assert decision.reason is Reason.OVERFLOW
    assert decision.drift is not None and decision.drift.cause is DriftCause.OVERLOAD
    assert policy.route(fp((1,), "dave"), fleet(4)).replica == decision.replica  # the new home sticks


def test_tiered_reports_tier1_drift_when_the_home_is_outside_an_unpinned_prefixs_owners() -> None:
    policy = TieredPolicy()
    request = fp((10, 11, 12), "frank", tier1="sys", tier1_blocks=2)
    home = policy.route(request, fleet(4)).replica
    assert home is not None
    replicas = tuple(
        dataclasses.replace(r, group="other" if r.name == home else "chat") for r in fleet(4).replicas
    )
    view = FleetView(replicas, {"sys": Tier1Prefix("sys", (10, 11), copies=3, group="chat")})
    decision = policy.route(request, view)
    assert decision.replica != home
    assert decision.drift is not None and decision.drift.cause is DriftCause.TIER1


def test_tiered_honours_pins_and_reports_pin_drift() -> None:
    policy = TieredPolicy()
    request = fp((10, 11, 12), "erin", tier1="sys", tier1_blocks=2)
    home = policy.route(request, fleet(4)).replica
    assert home is not None
    pinned_to = "r1" if home != "r1" else "r2"
    view = FleetView(fleet(4).replicas, {"sys": Tier1Prefix("sys", (10, 11), pinned=(pinned_to,))})
    decision = policy.route(request, view)
    assert (decision.replica, decision.reason, decision.tier1) == (pinned_to, Reason.PINNED, "sys")
    assert decision.drift is not None and decision.drift.cause is DriftCause.PIN
    others = {c.replica: c.excluded for c in decision.candidates if c.replica != pinned_to}
    assert set(others.values()) == {Exclusion.NOT_PINNED}


def test_tiered_falls_back_outside_a_pin_whose_replicas_are_all_down() -> None:
    policy = TieredPolicy()
    base = fleet(3, r1=ReplicaState.UNHEALTHY)
    view = FleetView(base.replicas, {"sys": Tier1Prefix("sys", (10,), pinned=("r1",))})
    decision = policy.route(fp((10, 11), "f", tier1="sys", tier1_blocks=1), view)
    assert decision.replica in {"r2", "r3"}
    assert decision.reason is Reason.FALLBACK


def test_tiered_keeps_a_tier1_prefix_on_its_top_k_owners() -> None:
    policy = TieredPolicy(hot_copy_factor=0.0)  # copies stay as registered
    view = FleetView(fleet(8).replicas, {"sys": Tier1Prefix("sys", (10, 11), copies=2)})
    requests = [fp((10, 11, 100 + i), f"s{i}", tier1="sys", tier1_blocks=2) for i in range(200)]
    assert len({policy.route(request, view).replica for request in requests}) == 2
    decision = policy.explain(fp((10, 11, 5), "x", tier1="sys", tier1_blocks=2), view)
    assert sum(1 for c in decision.candidates if c.excluded is Exclusion.NOT_OWNER) == 6


def test_tiered_grows_a_tier1_prefix_copies_with_its_share_of_requests() -> None:
    policy = TieredPolicy(hot_copy_factor=2.0)
    view = FleetView(fleet(8).replicas, {"sys": Tier1Prefix("sys", (10, 11), copies=1)})
    used = set()
    for i in range(400):
        if i % 4 == 0:  # a quarter of the requests: ceil(0.25 * 8 * 2) = 4 copies
            used.add(policy.route(fp((10, 11, 100 + i), f"s{i}", tier1="sys", tier1_blocks=2), view).replica)
        else:
            policy.route(fp((20_000 + i, 1), f"o{i}"), view)
    assert policy.copies_for(0.25, 8) == 4
    assert 2 < len(used) <= 4
    assert policy.copies_for(1.0, 8) == 8


def test_tiered_keeps_an_operator_pin_on_exactly_its_copies_however_hot() -> None:
    policy = TieredPolicy(hot_copy_factor=2.0)
    view = FleetView(fleet(4).replicas, {"sys": Tier1Prefix("sys", (10, 11), copies=2, source="pin")})
    used = {
        policy.route(fp((10, 11, 100 + i), f"s{i}", tier1="sys", tier1_blocks=2), view).replica
        for i in range(200)
    }
    assert len(used) == 2  # every request carries it (share 1.0), still the 2 copies asked for
    decision = policy.explain(fp((10, 11, 5), "x", tier1="sys", tier1_blocks=2), view)
    assert sum(1 for c in decision.candidates if c.excluded is Exclusion.NOT_OWNER) == 2


def test_tiered_restricts_a_grouped_prefix_to_its_group() -> None:
    replicas = tuple(ReplicaView(f"r{i}", group="a" if i <= 2 else "b") for i in range(1, 7))
    view = FleetView(replicas, {"sys": Tier1Prefix("sys", (10,), copies=6, group="b")})
    policy = TieredPolicy()
    requests = [fp((10, i), f"s{i}", tier1="sys", tier1_blocks=1) for i in range(100)]
    chosen = {policy.route(request, view).replica for request in requests}
    assert chosen == {"r3", "r4", "r5", "r6"}


def test_tiered_spills_to_the_least_loaded_outside_the_set_when_owners_are_full() -> None:
    policy = TieredPolicy(eps=0.25)
    loads = {"r1": 9, "r2": 9, "r3": 0, "r4": 2}
    view = FleetView(fleet(4, loads).replicas, {"sys": Tier1Prefix("sys", (10,), pinned=("r1", "r2"))})
    decision = policy.route(fp((10, 1), "g", tier1="sys", tier1_blocks=1), view)
    assert (decision.replica, decision.reason) == ("r3", Reason.OVERFLOW)


def test_tiered_spreads_a_prefix_shared_by_all_traffic_over_every_replica() -> None:
    policy = TieredPolicy(eps=0.25)
    loads: Counter[str] = Counter()
    for i in range(800):  # requests stay in flight: the load bound spreads the shared first block
        decision = policy.route(fp((0, 1000 + i, 2000 + i), f"conv{i}"), fleet(8, dict(loads)))
        loads[decision.replica or ""] += 1
    assert len(loads) == 8
    assert max(loads.values()) <= 1.25 * 100 + 1
    chosen = Counter(policy.route(fp((0, 5000 + i), f"new{i}"), fleet(8)).replica for i in range(800))
    assert len(chosen) == 8  # block 0 is cached everywhere now: sessions do the balancing
    assert max(chosen.values()) < 2 * 100


def test_tiered_prefers_the_replica_holding_the_longest_prefix() -> None:
    policy = TieredPolicy()
    first = policy.route(fp((7, 8, 9, 10), "a"), fleet(4))
    decision = policy.route(fp((7, 8, 9, 10, 11), "b"), fleet(4))
    assert (decision.replica, decision.reason) == (first.replica, Reason.CACHE_MATCH)
    assert decision.predicted_cached_blocks == 4


def test_tiered_leaves_a_home_whose_queue_costs_more_than_its_cache_saves() -> None:
    policy = TieredPolicy()
    home = policy.route(fp((1, 2), "s", prompt_tokens=128), fleet(4)).replica
    assert home is not None
    busy = FleetView(
        tuple(ReplicaView(r.name, pending_tokens=10_000 if r.name == home else 0) for r in fleet(4).replicas)
    )
    moved = policy.route(fp((1, 2, 3), "s", prompt_tokens=192), busy)
    assert moved.replica != home
    assert moved.drift is not None and moved.drift.cause is DriftCause.OVERLOAD
    mildly_busy = FleetView(
        tuple(
            ReplicaView(r.name, pending_tokens=50 if r.name == moved.replica else 0)
            for r in fleet(4).replicas
        )
    )
    assert policy.route(fp((1, 2, 3, 4), "s", prompt_tokens=256), mildly_busy).reason is Reason.SESSION_HOME


def test_tiered_keeps_a_conversation_home_whose_history_only_it_holds_over_a_short_queue() -> None:
    # Two candidates: the home alone holds the history, yet one replica of two is "half the
    # candidates", so the general ranking credits the history to both and leaving looked free.
    policy = TieredPolicy()
    home = policy.route(fp((1, 2, 3, 4), "s"), fleet(2)).replica
    queued = FleetView(
        tuple(ReplicaView(r.name, pending_tokens=600 if r.name == home else 0) for r in fleet(2).replicas)
    )
    decision = policy.route(fp((1, 2, 3, 4, 5, 6, 7, 8), "s"), queued)
    assert decision.replica == home
    assert decision.reason is Reason.SESSION_HOME
    assert decision.drift is None


def test_tiered_lets_a_home_holding_a_long_history_go_one_request_over_the_load_bound() -> None:
    policy = TieredPolicy()
    history = tuple(range(1, 101))  # 6400 tokens only the home holds
    home = policy.route(fp(history, "s"), fleet(4)).replica
    assert home is not None
    others = {f"r{i}": 2 for i in range(1, 5) if f"r{i}" != home}
    one_over = fleet(4, loads={**others, home: 6})  # bound ceil(1.75 * 13 / 4) = 6: 7 is one over
    assert policy.route(fp((*history, 101), "s"), one_over).replica == home
    two_over = fleet(4, loads={**others, home: 8})  # bound ceil(1.75 * 15 / 4) = 7: 9 is two over
    moved = policy.route(fp((*history, 101, 102), "s"), two_over)
    assert moved.replica != home
    assert moved.drift is not None and moved.drift.cause is DriftCause.OVERLOAD


def test_tiered_load_bound_has_a_floor_so_an_idle_fleet_does_not_scatter_sessions() -> None:
    """With under one request in flight per replica, ``ceil(1.75 * mean)`` is 1 or 2: a home with a
    request or two decoding would count as overloaded and its session would leave its cache. The
    bound never goes below ``min_bound`` (3) in-flight requests."""
    short = (1, 2)  # 128 tokens: no long-history slack
    for min_bound, stays in ((3, True), (1, False)):
        policy = TieredPolicy(min_bound=min_bound)
        home = policy.route(fp(short, "s"), fleet(4)).replica
        assert home is not None
        busy_home = fleet(4, loads={home: 2})  # ceil(1.75 * 3 / 4) = 2 without the floor
        decision = policy.route(fp((*short, 3), "s"), busy_home)
        assert (decision.replica == home) is stays, (min_bound, decision)
    with pytest.raises(ValueError):
        TieredPolicy(min_bound=0)


def test_tiered_session_table_is_a_bounded_lru() -> None:
    policy = TieredPolicy(max_sessions=3)
    view = fleet(4)
    for name in ("a", "b", "c", "d"):
        policy.route(fp((1,), name), view)
    assert sum(policy.session_homes().values()) == 3
    assert not policy.route(fp((1,), "d"), view).new_home
    assert policy.route(fp((1,), "a"), view).new_home


def test_tiered_forget_replica_drops_its_sessions() -> None:
    policy = TieredPolicy()
    view = fleet(2)
    for i in range(20):
        policy.route(fp((i,), f"s{i}"), view)
    policy.forget_replica("r1")
    assert set(policy.session_homes()) == {"r2"}


def test_tiered_does_not_starve_a_new_replica_of_a_prefix_everyone_else_holds() -> None:
    policy = TieredPolicy(eps=0.25)
    for i in range(16):  # block 0 starts every prompt; the load bound spreads it to all four replicas
        busy = {f"r{n}": 10 for n in range(1, 5)} | {f"r{i % 4 + 1}": 0}
        policy.route(fp((0, 100 + i), f"warm{i}"), fleet(4, busy))
    assert all(policy.index is not None and policy.index.size(f"r{n}") for n in range(1, 5))
    grown = fleet(5, {"r1": 3, "r2": 3, "r3": 3, "r4": 3, "r5": 0})
    decision = policy.route(fp((0, 999), "newcomer"), grown)
    assert decision.replica == "r5"  # its missing block 0 does not count against it


def test_tiered_starts_fresh_sessions_on_the_least_loaded_replica() -> None:
    policy = TieredPolicy()
    decision = policy.route(fp((42, 43), "fresh"), fleet(4, {"r1": 3, "r2": 1, "r3": 0, "r4": 2}))
    assert decision.replica == "r3"


def test_tiered_session_counts_follow_every_change_of_the_home_table() -> None:
    """session_homes() is kept incrementally (a status poll must not walk a million homes); after
    moves, LRU evictions and a forgotten replica it must equal a fresh count of the table."""
    import random

    rng = random.Random(7)
    policy = TieredPolicy(max_sessions=50)
    for step in range(2000):
        loads = {f"r{i}": rng.randint(0, 6) for i in range(1, 5)}  # busy homes push sessions away
        policy.route(fp((rng.randint(1, 5), step), f"s{rng.randint(0, 80)}"), fleet(4, loads=loads))
        if step == 1000:
            policy.forget_replica("r2")
        if step % 97 == 0:
            assert policy.session_homes() == dict(Counter(policy._homes.values())), step
    assert sum(policy.session_homes().values()) == 50
    assert all(count > 0 for count in policy.session_homes().values())


def test_tiered_names_no_prefix_owner_for_a_request_matching_no_tier1_prefix() -> None:
    policy = TieredPolicy()
    view = dataclasses.replace(fleet(3), tier1={"sys": Tier1Prefix("sys", (7, 8), copies=1)})
    unmatched = policy.route(fp((1, 2), "s1"), view)
    assert unmatched.reason is Reason.HRW_CHOICE
    matched = policy.route(fp((7, 8, 9), "s2", tier1="sys", tier1_blocks=2), view)
    assert matched.reason is Reason.PREFIX_OWNER


def test_session_policy_without_a_prefix_reports_its_hrw_choice() -> None:
    decision = make_policy("session").route(fp((1, 2), "s1"), fleet(3))
    assert decision.reason is Reason.HRW_CHOICE
