"""Where the console's data comes from: the router's admin API, or the replicas directly.

A source turns one poll into a :class:`Frame`. The app owns exactly one source, and a source owns
exactly one shared HTTP client for its whole life.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from pcache.api import DriftSeries, EventList, PrefixHeat, RouterEvent, StatusSnapshot
from pcache.client import AdminClient, AdminError
from pcache.direct import DirectState, direct_snapshot, replica_names

__all__ = ["DirectSource", "Frame", "RouterSource", "Source"]


@dataclass(frozen=True)
class Frame:
    """One poll's worth of data. ``heat`` and ``drift`` are ``None`` where the source has none."""

    status: StatusSnapshot
    heat: PrefixHeat | None = None
    drift: DriftSeries | None = None
    fetched_at: float = 0.0
    warnings: tuple[str, ...] = field(default=())
    events: tuple[RouterEvent, ...] = ()  # the router's newest events, oldest first


class Source(Protocol):
    label: str
    client: AdminClient | None  # set only when router actions are possible

    async def poll(self) -> Frame: ...

    async def aclose(self) -> None: ...


_EVENTS_KEPT = 300  # the event view shows the newest this many


class RouterSource:
    """Polls status, the prefix heat map, the drift series and new events from the admin API."""

    def __init__(
        self,
        client: AdminClient,
        *,
        top_prefixes: int = 20,
        drift_window_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client: AdminClient | None = client
        self.label = client.base_url
        self._admin = client
        self._top = top_prefixes
        self._window = drift_window_s
        self._clock = clock
        self._events: deque[RouterEvent] = deque(maxlen=_EVENTS_KEPT)
        self._last_event = 0

    async def poll(self) -> Frame:
        # Status is the frame; heat map, drift and events are extras a frame survives without.
        status, heat, drift, events = await asyncio.gather(
            self._admin.status(),
            self._admin.prefixes(top=self._top),
            self._admin.drift(since_s=self._window),
            self._admin.events(after=self._last_event, limit=_EVENTS_KEPT),
            return_exceptions=True,
        )
        if isinstance(status, BaseException):
            raise status
        # A failing extra (an older router, a body that does not parse) is a warning, not a failure.
        warnings = tuple(
            f"{what}: {str(error).splitlines()[0]}"
            for what, error in (("prefixes", heat), ("drift", drift), ("events", events))
            if isinstance(error, AdminError | ValueError)
        )
        for extra in (heat, drift, events):
            if isinstance(extra, BaseException) and not isinstance(extra, AdminError | ValueError):
                raise extra
        if isinstance(events, EventList):
            if events.last_id < self._last_event:  # the router restarted: its ids start again
                self._events.clear()
            self._events.extend(events.events)
            self._last_event = events.last_id
        return Frame(
            status=status,
            heat=heat if isinstance(heat, PrefixHeat) else None,
            drift=drift if isinstance(drift, DriftSeries) else None,
            fetched_at=self._clock(),
            warnings=warnings,
            events=tuple(self._events),
        )

    async def aclose(self) -> None:
        await self._admin.aclose()


class DirectSource:
    """Scrapes replicas that are not behind a router (``pcache top --replicas``): no actions."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client: AdminClient | None = None
        self._replicas = replica_names(urls)
        self.label = f"direct: {len(self._replicas)} replicas"
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._state: DirectState | None = None  # the previous scrape, for rates
        self._clock = clock

    async def poll(self) -> Frame:
        status, self._state = await direct_snapshot(self._replicas, self._http, self._state)
        return Frame(status=status, fetched_at=self._clock())

    async def aclose(self) -> None:
        await self._http.aclose()
