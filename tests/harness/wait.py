"""Kept for branches that still import from here: the helper lives in ``pcache.testing``."""

from pcache.testing.wait import eventually

__all__ = ["eventually"]
