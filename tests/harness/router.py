"""Kept for branches that still import from here: the launcher lives in ``pcache.testing``."""

from pcache.testing.router import DEFAULT_TOKEN, RouterProcess, RouterStartError

__all__ = ["DEFAULT_TOKEN", "RouterProcess", "RouterStartError"]
