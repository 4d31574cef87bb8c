"""Characters per token learned from engine counts: default first, then the engines' ratio."""

from __future__ import annotations

import pytest

from pcache.calibration import Calibration


def test_the_default_holds_until_enough_responses_were_seen() -> None:
    calibration = Calibration(4.0, min_samples=3)
    calibration.observe("r1", 270, 100)
    calibration.observe("r1", 540, 200)
    assert calibration.chars_per_token() == 4.0 and not calibration.calibrated()
    calibration.observe("r1", 27, 10)
    assert calibration.chars_per_token() == pytest.approx(2.7) and calibration.calibrated("r1")
    assert calibration.chars_per_token("r2") == 4.0 and calibration.samples("r1") == 3


def test_the_estimate_follows_a_change_of_tokenizer() -> None:
    calibration = Calibration(4.0, min_samples=1, decay=0.95)
    for _ in range(100):
        calibration.observe("r1", 300, 100)
    for _ in range(200):
        calibration.observe("r1", 250, 100)
    assert calibration.chars_per_token("r1") == pytest.approx(2.5, rel=0.01)


def test_replicas_keep_their_own_estimates_and_the_fleet_pools_them() -> None:
    calibration = Calibration(4.0, min_samples=1, decay=1.0)
    calibration.observe("r1", 200, 100)
    calibration.observe("r2", 400, 100)
    assert calibration.chars_per_token("r1") == 2.0 and calibration.chars_per_token("r2") == 4.0
    assert calibration.chars_per_token() == 3.0
    calibration.observe("r1", 0, 100)  # nothing rendered: ignored
    calibration.forget("r2")
    assert not calibration.calibrated("r2") and calibration.samples() == 2


def test_a_fixed_template_overhead_is_fitted_not_charged_to_every_character() -> None:
    """Short prompts with 20 template tokens each would make a plain ratio overstate long ones."""
    calibration = Calibration(4.0, min_samples=8)
    for chars in range(300, 900, 25):
        calibration.observe("r1", chars, round(20 + chars / 2.5))
    model = calibration.model()
    assert model.chars_per_token == pytest.approx(2.5, rel=0.01)
    assert model.overhead == pytest.approx(20.0, abs=1.0)
    assert model.tokens(5000) == pytest.approx(20 + 5000 / 2.5, rel=0.01)
    same_length = Calibration(4.0, min_samples=2)
    for _ in range(5):
        same_length.observe("r1", 500, 200)  # nothing to fit a slope on: the ratio
    assert same_length.model().chars_per_token == 2.5 and same_length.model().overhead == 0.0
