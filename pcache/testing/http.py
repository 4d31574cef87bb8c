"""``expect_ok``: a failing HTTP call in a test says what the server answered, not just its status."""

from __future__ import annotations

import httpx

__all__ = ["UnexpectedResponse", "expect_ok", "expect_status"]

_BODY_LIMIT = 2000


class UnexpectedResponse(AssertionError):
    """An HTTP response with a status the caller did not expect; the message carries the body."""


def _describe(response: httpx.Response) -> str:
    request = response.request
    try:
        body = response.text
    except httpx.ResponseNotRead:
        body = "<streamed body not read>"
    if len(body) > _BODY_LIMIT:
        body = body[:_BODY_LIMIT] + f"... ({len(body)} characters)"
    return f"{request.method} {request.url} -> {response.status_code}: {body}"


def expect_status(response: httpx.Response, *statuses: int) -> httpx.Response:
    """Return ``response`` if its status is one of ``statuses``, else fail with its status and body."""
    if response.status_code not in statuses:
        raise UnexpectedResponse(_describe(response))
    return response


def expect_ok(response: httpx.Response) -> httpx.Response:
    """Return ``response`` if its status is 2xx, else fail with its status and body."""
    if not response.is_success:
        raise UnexpectedResponse(_describe(response))
    return response
