"""Kept for branches that still import from here: the fake admin API lives in ``pcache.testing``."""

from pcache.testing.fake_admin import FROZEN_NOW, FakeRouter, fake_frame_parts, incident

__all__ = ["FROZEN_NOW", "FakeRouter", "fake_frame_parts", "incident"]
