"""A deterministic admin API in memory, for the console and CLI tests and the refresh benchmark.

:class:`FakeRouter` answers the admin API through ``httpx.MockTransport`` (the edge the console
does not own), records every request, and applies drains and pins to its own state, so a test can
check both what the console shows and what it sent.
"""

from __future__ import annotations

import json
import random
import re
from typing import Literal

import httpx

from pcache.api import (
    BlastRadius,
    DriftPoint,
    DriftSeries,
    ErrorCounts,
    EventList,
    PrefixCell,
    PrefixHeat,
    PrefixRow,
    ReplicaStatus,
    RouterEvent,
    RouterInfo,
    StatusSnapshot,
)

__all__ = ["FROZEN_NOW", "FakeRouter", "fake_events", "fake_frame_parts", "incident"]

FROZEN_NOW = 1_790_000_000.0
WINDOW_S = 60.0


def _replicas(count: int, rng: random.Random) -> list[ReplicaStatus]:
    replicas = []
    for i in range(1, count + 1):
        kv = round(rng.uniform(0.1, 0.97), 2)
        replicas.append(
            ReplicaStatus(
                name=f"r{i}",
                url=f"http://127.0.0.1:{8100 + i}",
                engine="vllm",
                state="healthy",
                in_flight=rng.randint(0, 6),
                running=rng.randint(0, 16),
                waiting=rng.randint(0, 4),
                kv_usage=kv,
                hit_rate=round(rng.uniform(0.2, 0.9), 3),
                ttft_p50=round(rng.uniform(0.02, 0.2), 3),
                ttft_p95=round(rng.uniform(0.2, 1.5), 3),
                sessions=rng.randint(0, 40),
                requests_per_s=round(rng.uniform(0.5, 9.0), 1),
                requests_total=rng.randint(100, 5000),
                scrape_age_s=0.5,
                window_s=WINDOW_S,
                errors=ErrorCounts(window_s=WINDOW_S),
                error_rate=0.0,
            )
        )
    return replicas


def _all_row(replicas: list[ReplicaStatus]) -> ReplicaStatus:
    up = [r for r in replicas if r.kv_usage is not None]
    return ReplicaStatus(
        name="ALL",
        url="",
        engine="mixed",
        state="healthy",
        in_flight=sum(r.in_flight for r in replicas),
        running=sum(r.running or 0 for r in replicas),
        waiting=sum(r.waiting or 0 for r in replicas),
        kv_usage=round(sum(r.kv_usage or 0 for r in up) / max(len(up), 1), 3),
        hit_rate=0.612,
        ttft_p95=0.84,
        sessions=sum(r.sessions for r in replicas),
        requests_per_s=round(sum(r.requests_per_s for r in replicas), 1),
        requests_total=sum(r.requests_total for r in replicas),
        window_s=WINDOW_S,
        errors=ErrorCounts(window_s=WINDOW_S),
        error_rate=0.0,
    )


def _heat(replicas: list[str], count: int, rng: random.Random) -> PrefixHeat:
    rows = []
    for i in range(count):
        kind: Literal["registered", "pinned", "hot"] = (
            "pinned" if i == 1 else ("registered" if i % 3 == 0 else "hot")
        )
        owners = [replicas[i % len(replicas)], replicas[(i + 1) % len(replicas)]]
        requests = 400 - i
        cells = {}
        for name in replicas:
            share = 0.0 if name not in owners else round(0.45 + rng.random() * 0.05, 2)
            if name not in owners and rng.random() < 0.15:
                share = 0.05
            cells[name] = PrefixCell(
                requests=int(requests * share),
                share=share,
                owner=name in owners,
                pinned=kind == "pinned" and name in owners,
            )
        rows.append(
            PrefixRow(
                key=f"{(i + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF:016x}",  # stable across seeds
                name=None if kind == "hot" else f"prefix-{i}",
                kind=kind,
                text_head=None if kind == "hot" else f"You are assistant {i}. Answer briefly.",
                tokens=512 + 16 * i,
                sessions=30 - i % 30,
                requests=requests,
                hit_rate=round(0.5 + (i % 5) / 10, 2),
                owners=owners,
                by_replica=cells,
            )
        )
    return PrefixHeat(window_s=300.0, replicas=replicas, prefixes=rows)


def _drift(now: float, rng: random.Random) -> DriftSeries:
    points = [
        DriftPoint(
            t=now - 60 * (20 - i),
            requests=100 + i,
            session_requests=80,
            moves=i % 4,
            drift_ratio=round((i % 4) / 80, 3),
            hit_rate=round(0.4 + i * 0.012 + rng.uniform(-0.02, 0.02), 3),
        )
        for i in range(21)
    ]
    return DriftSeries(window_s=60.0, points=points, moves_by_cause={"overload": 5, "drain": 2, "failure": 1})


def fake_frame_parts(
    replicas: int = 6, prefixes: int = 8, seed: int = 7, now: float = FROZEN_NOW
) -> tuple[StatusSnapshot, PrefixHeat, DriftSeries]:
    """A status snapshot (one replica DOWN, one STALE, two over the KV thresholds), its heat map
    and drift series."""
    rng = random.Random(seed)
    rows = _replicas(replicas, rng)
    if replicas >= 4:
        rows[2] = rows[2].model_copy(
            update={"state": "unhealthy", "kv_usage": None, "hit_rate": None, "last_error": "connect refused"}
        )
        rows[3] = rows[3].model_copy(update={"stale": True, "scrape_age_s": 31.0})
    if replicas >= 6:  # one replica over each KV threshold (yellow "high" at 65%, red "FULL" at 85%)
        rows[4] = rows[4].model_copy(update={"kv_usage": 0.91})
        rows[5] = rows[5].model_copy(update={"kv_usage": 0.72})
    router = RouterInfo(
        url="http://127.0.0.1:8080",
        admin_url="http://127.0.0.1:8081",
        policy="tiered",
        version="0.1.0",
        uptime_s=3600.0,
        requests_per_s=round(sum(r.requests_per_s for r in rows), 1),
        requests_total=sum(r.requests_total for r in rows),
        hit_rate=0.612,
        predicted_hit_rate=0.58,
        drift_ratio=0.021,
        generated_at=now,
    )
    heat = _heat([r.name for r in rows], prefixes, rng)
    rows = [
        r.model_copy(
            update={
                "tier1_owned": [p.name for p in heat.prefixes if p.name and r.name in p.owners],
                "tier1_pinned": [p.name for p in heat.prefixes if p.kind == "pinned" and r.name in p.owners],
            }
        )
        for r in rows
    ]
    snapshot = StatusSnapshot(
        router=router, replicas=rows, all=_all_row(rows), callouts=["r5: KV usage 91%, fleet mean 52%"]
    )
    return snapshot, heat, _drift(now, rng)


def incident(snapshot: StatusSnapshot) -> StatusSnapshot:
    """The same fleet in trouble: r2 failing a quarter of its attempts, r6 breaking streams, the
    fleet returning 5xx, and more call-outs than the console shows at once."""
    failing = {
        "r2": (ErrorCounts(window_s=WINDOW_S, upstream=41, retries=38, router_5xx=3), 0.23),
        "r6": (ErrorCounts(window_s=WINDOW_S, mid_stream=4), 0.012),
    }
    rows = [
        r.model_copy(update={"errors": failing[r.name][0], "error_rate": failing[r.name][1]})
        if r.name in failing
        else r
        for r in snapshot.replicas
    ]
    fleet = snapshot.all.model_copy(
        update={
            "errors": ErrorCounts(window_s=WINDOW_S, router_5xx=3, mid_stream=4, upstream=41, retries=38),
            "error_rate": 0.033,
        }
    )
    callouts = [
        "r2: 23% of attempts failed in the last 60s (41 upstream, 0 mid-stream, 3 5xx)",
        "r3: unhealthy, connect refused",
        "r4: healthy, no recent scrape",
        "r5: KV usage 91%, fleet mean 52%",
        "r6: load 13 (running+waiting), fleet mean 6.3",
    ]
    return snapshot.model_copy(update={"replicas": rows, "all": fleet, "callouts": callouts})


def fake_events(now: float = FROZEN_NOW) -> list[RouterEvent]:
    """A morning's worth of events: a drain, a prewarm with a failed pair, a replica going down."""
    return [
        RouterEvent(id=1, t=now - 600, kind="pin", message="prefix-1 pinned to r2, r3", prefix="prefix-1"),
        RouterEvent(
            id=2,
            t=now - 300,
            kind="drain",
            message="drain of r4: 2 in flight, 37 sessions move, 1 Tier-1 prefix(es) re-homed",
            replica="r4",
            job="pw-1",
        ),
        RouterEvent(
            id=3,
            t=now - 290,
            kind="prewarm",
            message="prewarm pw-1 failed: 1/2 pairs warmed; failed: prefix-3 on r5: HTTP 400",
            job="pw-1",
            ok=False,
        ),
        RouterEvent(
            id=4,
            t=now - 45,
            kind="replica_state",
            message="r3: healthy -> unhealthy (connect refused)",
            replica="r3",
            ok=False,
        ),
    ]


class FakeRouter:
    """An admin API in memory, served through ``httpx.MockTransport``."""

    def __init__(self, replicas: int = 6, prefixes: int = 8, now: float = FROZEN_NOW) -> None:
        self.snapshot, self.heat, self.drift = fake_frame_parts(replicas, prefixes, now=now)
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.snapshot_json_override: object = None  # served instead of the status snapshot
        self.events = fake_events(now)

    @property
    def writes(self) -> list[tuple[str, str]]:
        """Every non-GET request the console sent, except dry runs."""
        return [(m, p) for m, p in self.requests if m != "GET" and "dry_run" not in p]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _replica(self, name: str) -> ReplicaStatus | None:
        return next((r for r in self.snapshot.replicas if r.name == name), None)

    def _set_state(self, name: str, state: str) -> ReplicaStatus:
        rows = [
            r.model_copy(update={"state": state}) if r.name == name else r for r in self.snapshot.replicas
        ]
        self.snapshot = self.snapshot.model_copy(update={"replicas": rows})
        replica = self._replica(name)
        assert replica is not None
        return replica

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, request.url.raw_path.decode()))
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "GET" and path == "/api/v1/status":
            if self.snapshot_json_override is not None:
                return httpx.Response(200, json=self.snapshot_json_override)
            return httpx.Response(200, json=self.snapshot.model_dump(mode="json"))
        if request.method == "GET" and path == "/api/v1/prefixes":
            return httpx.Response(200, json=self.heat.model_dump(mode="json") if self.heat else None)
        if request.method == "GET" and path == "/api/v1/events":
            after = int(request.url.params.get("after", "0"))
            last = max((e.id for e in self.events), default=0)
            page = EventList(events=[e for e in self.events if e.id > after], last_id=last)
            return httpx.Response(200, json=page.model_dump(mode="json"))
        if request.method == "GET" and path == "/api/v1/drift":
            return httpx.Response(200, json=self.drift.model_dump(mode="json"))
        if match := re.fullmatch(r"/api/v1/replicas/([^/]+)/(drain|undrain|blast-radius)", path):
            name, verb = match.groups()
            replica = self._replica(name)
            if replica is None:
                return httpx.Response(
                    404, json={"error": {"message": f"no replica {name}", "type": "not_found"}}
                )
            if verb == "undrain":
                return httpx.Response(200, json=self._set_state(name, "healthy").model_dump(mode="json"))
            dry = verb == "blast-radius" or request.url.params.get("dry_run") == "true"
            moves = [
                BlastRadius.Tier1Move(
                    prefix=row.name or row.key, successors=[o for o in row.owners if o != name] or ["r1"]
                )
                for row in self.heat.prefixes
                if name in row.owners and row.name
            ]
            state = replica.state if dry else self._set_state(name, "draining").state
            radius = BlastRadius(
                replica=name,
                state=state,
                in_flight=replica.in_flight,
                sessions=replica.sessions,
                tier1=moves,
                dry_run=dry,
            )
            return httpx.Response(200, json=radius.model_dump(mode="json"))
        if request.method in ("PUT", "DELETE") and path.startswith("/api/v1/pins/"):
            name = path.rsplit("/", 1)[1]
            body = json.loads(request.content or b"{}")
            pin = {
                "name": name,
                "source": "pin",
                "text_head": body.get("text", "")[:80],
                "tokens": 10,
                "replicas": body.get("replicas") or [],
            }
            return httpx.Response(200, json=pin)
        return httpx.Response(404, json={"error": {"message": f"no route {path}", "type": "not_found"}})
