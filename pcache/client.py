"""Typed client of the router's admin API; the CLI and the console use nothing else.

Both :class:`AdminClient` (async) and :class:`SyncAdminClient` take an injectable httpx
``transport=`` so tests can swap the network, not the code.

Exceptions::

    AdminError
    ├── RouterUnreachable      connection refused, DNS, connect timeout: the router is not answering
    │   └── RouterTimeout      connected, but no answer within the request timeout
    └── ApiError               the router answered with an error status
        ├── Unauthorized       401/403: missing or wrong bearer token
        ├── NotFound           404: unknown replica, prefix, pin or job
        └── Refused            400/409/413/422: the request was understood and refused
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from pcache.api import (
    BlastRadius,
    DecisionOut,
    DriftSeries,
    EventList,
    ExplainRequest,
    PinIn,
    PinOut,
    PrefixHeat,
    PrewarmIn,
    PrewarmJob,
    ReplicaIn,
    ReplicaStatus,
    RouterStatus,
    StatusSnapshot,
)

__all__ = [
    "DEFAULT_ADMIN_URL",
    "AdminClient",
    "AdminError",
    "ApiError",
    "NotFound",
    "Refused",
    "RouterTimeout",
    "RouterUnreachable",
    "SyncAdminClient",
    "Unauthorized",
]

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
API = "/api/v1"

R = TypeVar("R")


class AdminError(Exception):
    """Base of every error the admin client raises."""


class RouterUnreachable(AdminError):
    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"router unreachable at {url}: {detail}")
        self.url = url


class RouterTimeout(RouterUnreachable):
    def __init__(self, url: str, detail: str) -> None:
        AdminError.__init__(self, f"router at {url} did not answer in time: {detail}")
        self.url = url


def _transport_error(url: str, exc: httpx.TransportError) -> RouterUnreachable:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return RouterTimeout(url, detail)
    return RouterUnreachable(url, detail)


class ApiError(AdminError):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Refused(ApiError):
    pass


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message = f"HTTP {response.status_code}"
    code: str | None = None
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code")
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
    except ValueError:
        if response.text:
            message = response.text[:200]
    status = response.status_code
    if status in (401, 403):
        raise Unauthorized(status, message, code)
    if status == 404:
        raise NotFound(status, message, code)
    if status in (400, 409, 413, 422):
        raise Refused(status, message, code)
    raise ApiError(status, message, code)


def _parse(response: httpx.Response, result: TypeAdapter[R]) -> R:
    _raise_for(response)
    return result.validate_python(response.json())


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    """One admin API request and the type its answer parses into."""

    method: str
    path: str
    result: TypeAdapter[R]
    params: Mapping[str, Any]
    body: Any


class _Calls:
    """The admin API as typed :class:`_Call` values, shared by both clients."""

    @staticmethod
    def status() -> _Call[StatusSnapshot]:
        return _Call("GET", f"{API}/status", TypeAdapter(StatusSnapshot), {}, None)

    @staticmethod
    def replicas() -> _Call[list[ReplicaStatus]]:
        return _Call("GET", f"{API}/replicas", TypeAdapter(list[ReplicaStatus]), {}, None)

    @staticmethod
    def routers() -> _Call[list[RouterStatus]]:
        return _Call("GET", f"{API}/routers", TypeAdapter(list[RouterStatus]), {}, None)

    @staticmethod
    def add_replica(replica: ReplicaIn) -> _Call[ReplicaStatus]:
        return _Call("POST", f"{API}/replicas", TypeAdapter(ReplicaStatus), {}, _dump(replica))

    @staticmethod
    def remove_replica(name: str, force: bool = False) -> _Call[BlastRadius]:
        params = {"force": "true"} if force else {}
        return _Call("DELETE", f"{API}/replicas/{name}", TypeAdapter(BlastRadius), params, None)

    @staticmethod
    def drain(name: str, dry_run: bool, force: bool = False) -> _Call[BlastRadius]:
        params = {"dry_run": "true"} if dry_run else {}
        if force:  # needed to drain the last routable replica
            params["force"] = "true"
        return _Call("POST", f"{API}/replicas/{name}/drain", TypeAdapter(BlastRadius), params, None)

    @staticmethod
    def events(after: int, limit: int) -> _Call[EventList]:
        return _Call("GET", f"{API}/events", TypeAdapter(EventList), {"after": after, "limit": limit}, None)

    @staticmethod
    def blast_radius(name: str) -> _Call[BlastRadius]:
        return _Call("GET", f"{API}/replicas/{name}/blast-radius", TypeAdapter(BlastRadius), {}, None)

    @staticmethod
    def undrain(name: str) -> _Call[ReplicaStatus]:
        return _Call("POST", f"{API}/replicas/{name}/undrain", TypeAdapter(ReplicaStatus), {}, None)

    @staticmethod
    def prefixes(top: int) -> _Call[PrefixHeat]:
        return _Call("GET", f"{API}/prefixes", TypeAdapter(PrefixHeat), {"top": top}, None)

    @staticmethod
    def pins() -> _Call[list[PinOut]]:
        return _Call("GET", f"{API}/pins", TypeAdapter(list[PinOut]), {}, None)

    @staticmethod
    def pin(name: str, pin: PinIn) -> _Call[PinOut]:
        return _Call("PUT", f"{API}/pins/{name}", TypeAdapter(PinOut), {}, _dump(pin))

    @staticmethod
    def unpin(name: str) -> _Call[PinOut]:
        return _Call("DELETE", f"{API}/pins/{name}", TypeAdapter(PinOut), {}, None)

    @staticmethod
    def explain(request: ExplainRequest) -> _Call[DecisionOut]:
        return _Call("POST", f"{API}/route/explain", TypeAdapter(DecisionOut), {}, _dump(request))

    @staticmethod
    def prewarm(request: PrewarmIn) -> _Call[PrewarmJob]:
        return _Call("POST", f"{API}/prewarm", TypeAdapter(PrewarmJob), {}, _dump(request))

    @staticmethod
    def prewarm_job(job_id: str) -> _Call[PrewarmJob]:
        return _Call("GET", f"{API}/prewarm/{job_id}", TypeAdapter(PrewarmJob), {}, None)

    @staticmethod
    def prewarm_jobs() -> _Call[list[PrewarmJob]]:
        return _Call("GET", f"{API}/prewarm", TypeAdapter(list[PrewarmJob]), {}, None)

    @staticmethod
    def drift(since_s: float) -> _Call[DriftSeries]:
        return _Call("GET", f"{API}/drift", TypeAdapter(DriftSeries), {"since": since_s}, None)


class AdminClient:
    """Async admin client. Use as ``async with AdminClient(url, token=...) as client``."""

    def __init__(
        self,
        base_url: str = DEFAULT_ADMIN_URL,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, call: _Call[R]) -> R:
        method, path, params, body = call.method, call.path, call.params, call.body
        try:
            response = await self._http.request(method, path, params=dict(params), json=body)
        except httpx.TransportError as exc:
            raise _transport_error(self.base_url, exc) from exc
        return _parse(response, call.result)

    async def status(self) -> StatusSnapshot:
        return await self._call(_Calls.status())

    async def replicas(self) -> list[ReplicaStatus]:
        return await self._call(_Calls.replicas())

    async def routers(self) -> list[RouterStatus]:
        return await self._call(_Calls.routers())

    async def add_replica(self, replica: ReplicaIn) -> ReplicaStatus:
        return await self._call(_Calls.add_replica(replica))

    async def remove_replica(self, name: str, *, force: bool = False) -> BlastRadius:
        return await self._call(_Calls.remove_replica(name, force))

    async def drain(self, name: str, *, dry_run: bool = False, force: bool = False) -> BlastRadius:
        return await self._call(_Calls.drain(name, dry_run, force))

    async def events(self, *, after: int = 0, limit: int = 200) -> EventList:
        """The router's events with an id above ``after``, oldest first."""
        return await self._call(_Calls.events(after, limit))

    async def blast_radius(self, name: str) -> BlastRadius:
        """What draining ``name`` would affect; a read, so it needs no write token."""
        return await self._call(_Calls.blast_radius(name))

    async def undrain(self, name: str) -> ReplicaStatus:
        return await self._call(_Calls.undrain(name))

    async def prefixes(self, top: int = 20) -> PrefixHeat:
        return await self._call(_Calls.prefixes(top))

    async def pins(self) -> list[PinOut]:
        return await self._call(_Calls.pins())

    async def pin(self, name: str, pin: PinIn) -> PinOut:
        return await self._call(_Calls.pin(name, pin))

    async def unpin(self, name: str) -> PinOut:
        return await self._call(_Calls.unpin(name))

    async def explain(self, request: ExplainRequest) -> DecisionOut:
        return await self._call(_Calls.explain(request))

    async def prewarm(self, request: PrewarmIn) -> PrewarmJob:
        return await self._call(_Calls.prewarm(request))

    async def prewarm_job(self, job_id: str) -> PrewarmJob:
        return await self._call(_Calls.prewarm_job(job_id))

    async def prewarm_jobs(self) -> list[PrewarmJob]:
        return await self._call(_Calls.prewarm_jobs())

    async def drift(self, since_s: float = 900.0) -> DriftSeries:
        return await self._call(_Calls.drift(since_s))


class SyncAdminClient:
    """Blocking twin of :class:`AdminClient`, for the CLI."""

    def __init__(
        self,
        base_url: str = DEFAULT_ADMIN_URL,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def __enter__(self) -> SyncAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, call: _Call[R]) -> R:
        method, path, params, body = call.method, call.path, call.params, call.body
        try:
            response = self._http.request(method, path, params=dict(params), json=body)
        except httpx.TransportError as exc:
            raise _transport_error(self.base_url, exc) from exc
        return _parse(response, call.result)

    def status(self) -> StatusSnapshot:
        return self._call(_Calls.status())

    def replicas(self) -> list[ReplicaStatus]:
        return self._call(_Calls.replicas())

    def routers(self) -> list[RouterStatus]:
        return self._call(_Calls.routers())

    def add_replica(self, replica: ReplicaIn) -> ReplicaStatus:
        return self._call(_Calls.add_replica(replica))

    def remove_replica(self, name: str, *, force: bool = False) -> BlastRadius:
        return self._call(_Calls.remove_replica(name, force))

    def drain(self, name: str, *, dry_run: bool = False, force: bool = False) -> BlastRadius:
        return self._call(_Calls.drain(name, dry_run, force))

    def events(self, *, after: int = 0, limit: int = 200) -> EventList:
        """The router's events with an id above ``after``, oldest first."""
        return self._call(_Calls.events(after, limit))

    def blast_radius(self, name: str) -> BlastRadius:
        """What draining ``name`` would affect; a read, so it needs no write token."""
        return self._call(_Calls.blast_radius(name))

    def undrain(self, name: str) -> ReplicaStatus:
        return self._call(_Calls.undrain(name))

    def prefixes(self, top: int = 20) -> PrefixHeat:
        return self._call(_Calls.prefixes(top))

    def pins(self) -> list[PinOut]:
        return self._call(_Calls.pins())

    def pin(self, name: str, pin: PinIn) -> PinOut:
        return self._call(_Calls.pin(name, pin))

    def unpin(self, name: str) -> PinOut:
        return self._call(_Calls.unpin(name))

    def explain(self, request: ExplainRequest) -> DecisionOut:
        return self._call(_Calls.explain(request))

    def prewarm(self, request: PrewarmIn) -> PrewarmJob:
        return self._call(_Calls.prewarm(request))

    def prewarm_job(self, job_id: str) -> PrewarmJob:
        return self._call(_Calls.prewarm_job(job_id))

    def prewarm_jobs(self) -> list[PrewarmJob]:
        return self._call(_Calls.prewarm_jobs())

    def drift(self, since_s: float = 900.0) -> DriftSeries:
        return self._call(_Calls.drift(since_s))
