"""The test launchers, re-exported from ``pcache.testing`` (import them from there in new code)."""
