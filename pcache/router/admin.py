"""The admin API (FastAPI, its own listener): status, replicas, prefixes, pins, explain, prewarm, drift.

Paths and wire models are those of :mod:`pcache.api` / :mod:`pcache.client`. Every write needs the
bearer token (compared in constant time); reads need it only with ``admin.auth_reads``. Every error,
including validation errors and unknown paths, is an OpenAI-style ``{"error": {...}}`` body.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcache import __version__
from pcache.api import (
    BlastRadius,
    CandidateOut,
    DecisionOut,
    DriftSeries,
    ErrorBody,
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
from pcache.fleet_view import ReplicaState
from pcache.prompt import PromptError
from pcache.router.actions import ActionError
from pcache.router.config import NAME_PATTERN
from pcache.router.snapshot import replica_status, status_snapshot, with_cache_index, with_calibration
from pcache.state import StateError

if TYPE_CHECKING:
    from pcache.router.daemon import RouterDaemon

__all__ = ["build_admin_app"]

_BURST_LOOKBACK_S = 3600.0  # how far back a read of the event log looks for home-move bursts

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token"},
    404: {"model": ErrorBody, "description": "Unknown replica, pin or job"},
    409: {"model": ErrorBody, "description": "Refused (e.g. draining the last routable replica)"},
    422: {"model": ErrorBody, "description": "Invalid request"},
}

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    422: "invalid_request_error",
    503: "service_unavailable_error",
    507: "insufficient_storage_error",
}


def _error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def build_admin_app(daemon: RouterDaemon) -> FastAPI:
    """The admin application bound to one running daemon."""
    app = FastAPI(
        title="pcache router admin API",
        version=__version__,
        description="Operate a pcache router: fleet status, drains, pins, prewarms, route explain, drift.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    token = daemon.token
    events = daemon.events
    actions = daemon.actions

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _error(exc.status_code, detail, code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
        return _error(422, "; ".join(parts) or "invalid request", "invalid_request")

    @app.exception_handler(ActionError)
    async def _refused(_: Request, exc: ActionError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.code)

    @app.exception_handler(StateError)
    async def _store_failed(_: Request, exc: StateError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return _error(exc.status, exc.message, exc.code, headers)

    def _check(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    def require_write(request: Request) -> None:
        _check(request)

    def require_read(request: Request) -> None:
        if daemon.config.admin.auth_reads:
            _check(request)

    read = [Depends(require_read)]
    write = [Depends(require_write)]

    def _replica_row(name: str) -> ReplicaStatus:
        fleet = daemon.fleet
        return replica_status(
            fleet.get(name),
            ledger=daemon.ledger,
            errors=daemon.metrics.errors,
            sessions=daemon.policy.session_homes(),
            owners=daemon.routing.owners(),
            pinned={n: p.pinned for n, p in fleet.tier1.items() if p.pinned},
            stale_after_s=daemon.config.scrape.stale_after_s,
            now=time.time(),
        )

    @app.get("/api/v1/status", response_model=StatusSnapshot, dependencies=read, responses=_ERRORS)
    async def status() -> StatusSnapshot:
        """The fleet at a glance: router header, one row per replica, the ALL row, call-outs."""
        snapshot = status_snapshot(
            daemon.fleet,
            owners=daemon.routing.owners(),
            ledger=daemon.ledger,
            errors=daemon.metrics.errors,
            sessions=daemon.policy.session_homes(),
            policy=daemon.policy.name,
            url=daemon.url,
            admin_url=daemon.admin_url,
            started_at=daemon.started_at,
            stale_after_s=daemon.config.scrape.stale_after_s,
            state_store=daemon.store.location,
            state_error=daemon.state_sync.error,
        )
        snapshot = with_cache_index(snapshot, daemon.fleet, daemon.routing.kv, daemon.routing.accuracy)
        return with_calibration(snapshot, daemon.routing.calibration, daemon.routing.chars_per_token)

    @app.get("/api/v1/routers", response_model=list[RouterStatus], dependencies=read, responses=_ERRORS)
    async def routers() -> list[RouterStatus]:
        """Every router sharing this router's state store (itself first), a silent one flagged lost."""
        return daemon.membership.rows()

    @app.get("/api/v1/replicas", response_model=list[ReplicaStatus], dependencies=read, responses=_ERRORS)
    async def replicas() -> list[ReplicaStatus]:
        """Every replica's status row."""
        return (await status()).replicas

    @app.post(
        "/api/v1/replicas",
        response_model=ReplicaStatus,
        status_code=201,
        dependencies=write,
        responses=_ERRORS,
    )
    async def add_replica(replica: ReplicaIn) -> ReplicaStatus:
        """Add a replica at run time; it takes traffic once healthy and prewarmed with its Tier-1 share."""
        handover = await actions.add_replica(
            replica.name, replica.url, replica.engine, replica.group, replica.weight
        )
        return _replica_row(replica.name).model_copy(update={"handover": handover})

    @app.get("/api/v1/replicas/{name}", response_model=ReplicaStatus, dependencies=read, responses=_ERRORS)
    async def replica(name: str) -> ReplicaStatus:
        """One replica's status row."""
        if name not in daemon.fleet:
            raise ActionError(404, f"unknown replica {name!r}", "unknown_replica")
        return _replica_row(name)

    @app.delete("/api/v1/replicas/{name}", response_model=BlastRadius, dependencies=write, responses=_ERRORS)
    async def remove_replica(name: str, force: Annotated[bool, Query()] = False) -> BlastRadius:
        """Remove a replica; its Tier-1 prefixes are prewarmed on their successors first."""
        return await actions.remove_replica(name, force=force)

    @app.get(
        "/api/v1/replicas/{name}/blast-radius",
        response_model=BlastRadius,
        dependencies=read,
        responses=_ERRORS,
    )
    async def blast_radius(name: str) -> BlastRadius:
        """What draining the replica would affect (a read: the same answer as a drain's dry run)."""
        return await actions.drain(name, dry_run=True)

    @app.post(
        "/api/v1/replicas/{name}/drain", response_model=BlastRadius, dependencies=write, responses=_ERRORS
    )
    async def drain(
        name: str,
        dry_run: Annotated[bool, Query(description="only report the blast radius")] = False,
        force: Annotated[bool, Query(description="allow draining the last routable replica")] = False,
        confirm: Annotated[str | None, Query(description="the replica's name: same as force")] = None,
    ) -> BlastRadius:
        """Drain a replica (no new sessions; Tier-1 successors prewarmed first; drained when idle)."""
        radius = await actions.drain(name, dry_run=dry_run, force=force or confirm == name)
        if not dry_run:
            moves = f", {len(radius.tier1)} Tier-1 prefix(es) re-homed" if radius.tier1 else ""
            events.record(
                "drain",
                f"drain of {name}: {radius.in_flight} in flight, {radius.sessions} sessions move{moves}",
                replica=name,
                job=radius.prewarm_job,
            )
        return radius

    @app.post(
        "/api/v1/replicas/{name}/undrain", response_model=ReplicaStatus, dependencies=write, responses=_ERRORS
    )
    async def undrain(name: str) -> ReplicaStatus:
        """Return a draining or drained replica to service."""
        await actions.undrain(name)
        events.record("undrain", f"{name} undrained: it takes new sessions again", replica=name)
        return _replica_row(name)

    @app.get("/api/v1/prefixes", response_model=PrefixHeat, dependencies=read, responses=_ERRORS)
    async def prefixes(top: Annotated[int, Query(ge=1, le=1000)] = 20) -> PrefixHeat:
        """Heat map: top prefixes x replicas over the recent window."""
        return daemon.ledger.heat(
            top,
            daemon.fleet.tier1,
            daemon.routing.owners(),
            texts=actions.texts(),
            fleet=[e.name for e in daemon.fleet.entries() if e.state is not ReplicaState.REMOVED],
        )

    @app.get("/api/v1/pins", response_model=list[PinOut], dependencies=read, responses=_ERRORS)
    async def pins() -> list[PinOut]:
        """Every Tier-1 prefix (from the config, pinned at run time, or auto-promoted)."""
        return actions.pins()

    @app.put("/api/v1/pins/{name}", response_model=PinOut, dependencies=write, responses=_ERRORS)
    async def pin(
        name: Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN)], body: PinIn
    ) -> PinOut:
        """Register or replace a Tier-1 prefix pinned to replicas or k copies; optionally prewarm it."""
        pinned = await actions.pin(name, body)
        where = ", ".join(pinned.replicas) if pinned.replicas else f"top-{pinned.copies} of its HRW ranking"
        events.record("pin", f"{name} pinned to {where}", prefix=name, job=pinned.prewarm_job)
        return pinned

    @app.delete("/api/v1/pins/{name}", response_model=PinOut, dependencies=write, responses=_ERRORS)
    async def unpin(name: str) -> PinOut:
        """Remove a run-time pin (config-defined prefixes are edited in the config)."""
        removed = await actions.unpin(name)
        events.record("unpin", f"{name} unpinned", prefix=name)
        return removed

    def _block_size(replica: str | None) -> int | None:
        if replica is None or replica not in daemon.fleet:
            return None
        stats = daemon.fleet.get(replica).stats
        return stats.block_size if stats is not None else None

    @app.post("/api/v1/route/explain", response_model=DecisionOut, dependencies=read, responses=_ERRORS)
    async def explain(request: ExplainRequest) -> DecisionOut:
        """The decision the router would make for this request now; nothing is booked."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.session is not None:
            headers[daemon.fingerprint_config.session_header.lower()] = request.session
        try:
            fingerprint = daemon.routing.fingerprint(request.body, headers)
        except PromptError as exc:
            raise ActionError(422, str(exc), "invalid_prompt") from exc
        fingerprint = await daemon.routing.with_engine_tokens(fingerprint, request.body)
        decision = daemon.routing.explain(fingerprint)
        return DecisionOut(
            policy=decision.policy,
            replica=decision.replica,
            reason=decision.reason.value,
            session=decision.session if decision.session is not None else fingerprint.session,
            session_source=fingerprint.session_source.value,
            prefix_key=f"{decision.prefix_key:016x}" if decision.prefix_key is not None else None,
            tier1=decision.tier1 or fingerprint.tier1,
            prompt_tokens=fingerprint.prompt_tokens,
            blocks=len(fingerprint.blocks),
            predicted_cached_tokens=(
                daemon.routing.predicted_tokens(fingerprint, decision, decision.replica)
                if decision.replica is not None
                else 0
            ),
            prompt_chars=fingerprint.prompt_chars,
            chars_per_token=daemon.routing.chars_per_token,
            chars_per_token_calibrated=daemon.routing.calibration.calibrated(),
            engine_block_size=_block_size(decision.replica),
            engine_tokens=len(fingerprint.engine_tokens) if fingerprint.engine_tokens is not None else None,
            drift_cause=decision.drift.cause.value if decision.drift is not None else None,
            candidates=[
                CandidateOut(
                    replica=c.replica,
                    score=c.score,
                    load=c.load,
                    excluded=c.excluded.value if c.excluded is not None else None,
                    cache_source=c.cache_source,
                    cached_tokens=c.cached_tokens,
                    cached_tokens_by_medium=dict(c.tokens_by_medium),
                )
                for c in decision.candidates
            ],
        )

    @app.post(
        "/api/v1/prewarm", response_model=PrewarmJob, status_code=202, dependencies=write, responses=_ERRORS
    )
    async def prewarm(request: PrewarmIn) -> PrewarmJob:
        """Start a prewarm job (or, with ``dry_run``, return its plan)."""
        job = await actions.prewarm(request)
        if not request.dry_run:
            events.record(
                "prewarm", f"prewarm {job.id} started: {job.total} prefix x replica pair(s)", job=job.id
            )
        return job

    @app.get("/api/v1/prewarm", response_model=list[PrewarmJob], dependencies=read, responses=_ERRORS)
    async def prewarm_jobs() -> list[PrewarmJob]:
        """Recent prewarm jobs, oldest first."""
        return actions.jobs.all()

    @app.get("/api/v1/prewarm/{job_id}", response_model=PrewarmJob, dependencies=read, responses=_ERRORS)
    async def prewarm_job(job_id: str) -> PrewarmJob:
        """One prewarm job with its per-(prefix, replica) results."""
        job = actions.jobs.get(job_id)
        if job is None:
            raise ActionError(404, f"unknown prewarm job {job_id!r}", "unknown_job")
        return job

    @app.get("/api/v1/events", response_model=EventList, dependencies=read, responses=_ERRORS)
    async def event_log(
        after: Annotated[int, Query(ge=0, description="only events with a higher id")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="at most this many, the newest")] = 200,
    ) -> EventList:
        """The router's events, oldest first: operator actions, prewarm results, replica state
        changes and home-move bursts."""
        events.sweep(jobs=actions.jobs.all(), drift=daemon.ledger.drift(_BURST_LOOKBACK_S))
        return events.since(after, limit)

    @app.get("/api/v1/drift", response_model=DriftSeries, dependencies=read, responses=_ERRORS)
    async def drift(since: Annotated[float, Query(gt=0, le=86400 * 7)] = 900.0) -> DriftSeries:
        """Session home moves and hit rates per ledger window."""
        return daemon.ledger.drift(since)

    return app
