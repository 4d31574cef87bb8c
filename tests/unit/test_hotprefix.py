"""Hot-prefix detection: shared prefixes found online, conversations not, memory bounded."""

from __future__ import annotations

from pcache.hotprefix import HotPrefixDetector


def test_a_prefix_shared_by_enough_sessions_becomes_hot() -> None:
    detector = HotPrefixDetector(min_sessions=4)
    depths = [detector.observe((1, 2, 3, 100 + i), f"s{i}") for i in range(8)]
    assert depths[:3] == [0, 0, 0]  # fewer than 4 sessions so far
    assert depths[-1] == 3
    assert depths == sorted(depths)  # deeper blocks follow one session behind the shallower ones
    (hot,) = [h for h in detector.hot() if h.depth == 3]
    assert (hot.key, hot.sessions) == (3, 6)


def test_one_session_repeating_a_prefix_never_makes_it_hot() -> None:
    detector = HotPrefixDetector(min_sessions=2)
    assert all(detector.observe((1, 2, 3), "same") == 0 for _ in range(50))
    assert detector.hot() == []


def test_without_sessions_many_continuations_mark_a_shared_prefix() -> None:
    detector = HotPrefixDetector(min_sessions=4)
    for i in range(10):
        detector.observe((0, 1000 + i, 2000 + i))  # everyone shares block 0
    conversation = (0, 55, 56)
    for turn in range(10):  # a conversation only extends itself: 55 always continues with 56
        depth = detector.observe((*conversation, *range(60, 60 + turn)))
    assert depth == 1
    assert detector.depth((0, 55, 56)) == 1


def test_share_of_a_prefix_follows_its_fraction_of_requests() -> None:
    detector = HotPrefixDetector(min_sessions=2, window=100)
    for i in range(400):
        group = 1 if i % 4 == 0 else 2
        detector.observe((group, 10_000 + i), f"s{i}")
    assert abs(detector.share(1) - 0.25) < 0.02
    assert abs(detector.share(2) - 0.75) < 0.02
    assert detector.share(999) == 0.0
    assert detector.shared_depth((2, 5), min_share=0.5) == 1
    assert detector.shared_depth((1, 5), min_share=0.5) == 0


def test_share_decays_once_a_prefix_goes_cold() -> None:
    detector = HotPrefixDetector(min_sessions=2, window=100)
    for i in range(200):
        detector.observe((1, i), f"s{i}")
    for i in range(300):
        detector.observe((2, i), f"t{i}")
    assert detector.share(1) == 0.0
    assert detector.share(2) == 1.0


def test_depth_answers_without_booking() -> None:
    detector = HotPrefixDetector(min_sessions=2)
    detector.observe((1, 2), "a")
    assert detector.depth((1, 2)) == 0
    assert detector.requests == 1
    detector.observe((1, 2), "b")
    detector.observe((1, 2), "c")
    assert detector.depth((1, 2, 3)) == 2


def test_entries_are_bounded_by_an_lru() -> None:
    detector = HotPrefixDetector(min_sessions=2, max_entries=50)
    for i in range(1000):
        detector.observe((i, i + 10_000))
    assert len(detector) == 50
