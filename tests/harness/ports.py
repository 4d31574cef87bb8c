"""Kept for branches that still import from here: the launcher lives in ``pcache.testing``."""

from pcache.testing.ports import free_port

__all__ = ["free_port"]
