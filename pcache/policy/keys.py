"""Routing keys taken from a fingerprint: the session key, or the request's own identity."""

from __future__ import annotations

from pcache.fingerprint import Fingerprint

__all__ = ["request_key"]


def request_key(fingerprint: Fingerprint) -> int | str:
    """The session key when there is one, else the last block (which chains the whole prompt)."""
    if fingerprint.session is not None:
        return fingerprint.session
    return fingerprint.blocks[-1] if fingerprint.blocks else 0
