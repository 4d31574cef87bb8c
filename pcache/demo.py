"""``pcache demo``: a simulated fleet, the router and real traffic, wired together and torn down.

:class:`DemoRun` starts the simulator (``python -m pcache.sim``: the routed replicas plus a spare
the router does not know yet) and the router (``python -m pcache.router``) as child processes, each
in its own process group, waits for their ``ready`` lines, then drives
:class:`~pcache.loadgen.LoadGenerator` through the router while a scripted :class:`Scenario` adds
the spare, fails and recovers one replica and drains another.
Results come from the replicas' own ``/metrics`` counters (deltas over the run).

No process outlives the demo: children are stopped on every exit path, a crashed child stops the
rest, and a :class:`~pcache.supervisor.Reaper` kills their process groups if the demo itself is
killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import yaml

from pcache.api import ReplicaIn, StatusSnapshot
from pcache.client import AdminClient, AdminError
from pcache.engines import parse_metrics
from pcache.engines.base import ReplicaStats
from pcache.engines.histogram import merge_buckets, quantile
from pcache.engines.rates import increase
from pcache.loadgen import LoadGenerator, LoadLimits, LoadSummary
from pcache.replay.simfleet import POOL_COST_FACTOR
from pcache.supervisor import ChildError, ChildProcess, Reaper
from pcache.workload import SystemPrompt, Workload, default_prompts

__all__ = [
    "ChildCrashed",
    "DemoError",
    "DemoFleet",
    "DemoResult",
    "DemoRun",
    "FleetCounters",
    "Scenario",
    "demo_workload",
    "fleet_document",
    "router_document",
    "run_compare",
]

TOKEN_ENV = "PCACHE_DEMO_ADMIN_TOKEN"


class DemoError(RuntimeError):
    """The demo could not start or could not go on; the message says which part and why."""


class ChildCrashed(DemoError):
    """A child process (simulator or router) exited while the demo was running."""


# ---- the fleet and its configuration ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoFleet:
    """The simulated fleet: replicas ``r1..rN`` in two task groups, plus one spare.

    The groups are sized to their traffic: the demo's Zipf popularity sends 62.6% of sessions to
    the three support prompts and 37.4% to the three code prompts, so 5 and 3 of 8 replicas.
    Caches are deliberately finite (``num_gpu_blocks`` of 16 tokens, 64k tokens a replica): the
    fleet as a whole holds every live conversation once with about a quarter to spare, one replica
    holds about a sixth of them, which is the situation where routing decides the hit rate (a
    production replica holds more, and serves proportionally more sessions). Timing is vLLM's
    shape scaled to milliseconds (fixed cost + per-uncached-token prefill, then one token per
    ``inter_token_ms``).
    """

    groups: tuple[tuple[str, int], ...] = (("support", 5), ("code", 3))
    spare_group: str | None = "support"
    num_gpu_blocks: int = 4096
    max_num_seqs: int = 64
    t0_ms: float = 2.0
    per_token_us: float = 40.0
    inter_token_ms: float = 2.0
    # ``pcache demo --pool``: a KV pool shared by the replicas (blocks of 16 tokens; 0 = none) with
    # this round trip, and a router whose ``tiered`` knows it
    pool_blocks: int = 0
    pool_latency_ms: float = 10.0

    def group_size(self, group: str | None) -> int:
        return sum(count for name, count in self.groups if name == group)

    @property
    def routed(self) -> tuple[tuple[str, str], ...]:
        """``(name, group)`` of the replicas the router starts with."""
        names: list[tuple[str, str]] = []
        for group, count in self.groups:
            names.extend((f"r{len(names) + 1}", group) for _ in range(count))
        return tuple(names)

    @property
    def spare(self) -> str | None:
        """Name of the spare replica (started, not in the router's config), if any."""
        return f"r{len(self.routed) + 1}" if self.spare_group is not None else None

    @property
    def size(self) -> int:
        return len(self.routed) + (1 if self.spare else 0)


def demo_workload(seed: int = 0, prompts: tuple[SystemPrompt, ...] | None = None) -> Workload:
    """The demo's traffic: the six built-in prompts and long, agent-like multi-turn sessions.

    Each of 10-18 turns appends 500-1500 tokens (a pasted log or file, a tool's output) and a short
    reply (64 tokens: an answer or the next tool call) after a think time of 1 s on average (a tool
    running, a quick user), so a conversation soon outweighs its 1-2k-token system prompt and each
    turn reuses far more than it adds, as in agent and coding-assistant traffic. The longest
    conversation (~30k tokens) still fits a replica's 32k context. 2.4 new sessions a second keep
    about 45 conversations live, ~35 requests a second.
    """
    return Workload(
        prompts=prompts or default_prompts(),
        session_rate=2.4,
        turns=(10, 18),
        think_time_s=1.0,
        user_chars=(2000, 6000),
        max_tokens=64,
        zipf_s=1.0,
        seed=seed,
    )


def fleet_document(fleet: DemoFleet) -> dict[str, Any]:
    """The ``pcache sim --config`` YAML document of ``fleet`` (ports from ``--base-port``)."""
    return {
        "defaults": {
            "num_gpu_blocks": fleet.num_gpu_blocks,
            "max_num_seqs": fleet.max_num_seqs,
            "t0_ms": fleet.t0_ms,
            "per_token_us": fleet.per_token_us,
            "inter_token_ms": fleet.inter_token_ms,
            "default_max_tokens": 64,
            # Each replica publishes its KV-cache events like vLLM, binding a free loopback port.
            "kv_events": {
                "endpoint": "tcp://127.0.0.1:*",
                "replay_endpoint": "tcp://127.0.0.1:*",
                "topic": "kv-events",
            },
        },
        "replicas": [{"name": f"r{index}"} for index in range(1, fleet.size + 1)],
        **(
            {"pool": {"blocks": fleet.pool_blocks, "latency_ms": fleet.pool_latency_ms}}
            if fleet.pool_blocks
            else {}
        ),
    }


def _pool_params(fleet: DemoFleet) -> dict[str, float]:
    """``tiered``'s pool parameters for the demo fleet: the pool's capacity in tokens, its round trip
    in prompt tokens of prefill (the fleet's per-token cost), both costs weighed 3x as the replayer
    measured (:data:`pcache.replay.simfleet.POOL_COST_FACTOR`); the simulator's 2 µs per token loaded."""
    factor = POOL_COST_FACTOR
    return {
        "pool_tokens": fleet.pool_blocks * 16,
        "pool_weight": max(0.0, 1.0 - factor * 2.0 / fleet.per_token_us),
        "pool_latency_tokens": factor * fleet.pool_latency_ms * 1000.0 / fleet.per_token_us,
    }


def kv_events_entry(source: dict[str, Any]) -> dict[str, Any]:
    """A router's ``kv_events`` entry for an engine that bound ``source`` (its ``/kv_event_sources``
    answer for one rank): the host written as ``*``, as in the engine's own config, so the router
    connects to the replica's host."""

    def wildcard(endpoint: str) -> str:
        scheme, _, address = endpoint.partition("://")
        return f"{scheme}://*:{address.rsplit(':', 1)[1]}" if scheme == "tcp" else endpoint

    entry: dict[str, Any] = {"endpoint": wildcard(str(source["endpoint"])), "topic": source.get("topic", "")}
    if source.get("replay_endpoint"):
        entry["replay_endpoint"] = wildcard(str(source["replay_endpoint"]))
    return entry


def router_document(
    fleet: DemoFleet,
    urls: dict[str, str],
    prompts: Sequence[SystemPrompt],
    *,
    policy: str = "tiered",
    listen: str = "127.0.0.1:0",
    admin_listen: str = "127.0.0.1:0",
    prompt_dir: str = "prompts",
    kv_events: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The router config: the routed replicas with their groups and one Tier-1 prefix per prompt.

    Each shared prompt is kept on every replica of its task group (``copies`` = group size); the
    policy runs with its default parameters. ``kv_events`` (per replica) turns on the precise index.
    """
    tier1: list[dict[str, Any]] = []
    for prompt in prompts:
        entry: dict[str, Any] = {"name": prompt.name, "file": f"{prompt_dir}/{prompt.name}.txt"}
        if prompt.group is not None and fleet.group_size(prompt.group):
            entry["group"] = prompt.group
            entry["copies"] = fleet.group_size(prompt.group)
        tier1.append(entry)
    return {
        "listen": listen,
        "admin": {"listen": admin_listen, "token_env": TOKEN_ENV},
        "policy": {
            "name": policy,
            **({"params": _pool_params(fleet)} if fleet.pool_blocks and policy == "tiered" else {}),
        },
        "replicas": [
            {
                "name": name,
                "url": urls[name],
                "group": group,
                **({"kv_events": kv_events[name]} if kv_events and name in kv_events else {}),
            }
            for name, group in fleet.routed
        ],
        "tier1": tier1,
        "health": {"interval_s": 0.5, "timeout_s": 1.0, "failures": 2, "recoveries": 2},
        "scrape": {"interval_s": 1.0, "timeout_s": 1.0},
        "state": "memory://",
        "log_level": "warning",
    }


# ---- counters from the replicas themselves ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetCounters:
    """Fleet results from the replicas' own counters: deltas between two scrapes of every replica."""

    hit_rate: float | None  # prefix-cache hits / queries (tokens), fleet-wide
    ttft_p50_s: float | None  # from merged TTFT histogram buckets
    ttft_p95_s: float | None
    imbalance: float | None  # busiest replica's finished requests / mean over replicas
    requests: dict[str, int]  # finished requests by replica
    prefix_queries: float
    prefix_hits: float

    @classmethod
    def between(cls, before: dict[str, ReplicaStats], after: dict[str, ReplicaStats]) -> FleetCounters:
        """Deltas over the replicas scraped both times (a counter that went down restarted: from 0)."""
        queries = hits = 0.0
        requests: dict[str, int] = {}
        deltas: list[tuple[tuple[float, float], ...]] = []
        for name in sorted(after):
            now, then = after[name], before.get(name)
            queries += _delta(now.prefix_queries, then.prefix_queries if then else None)
            hits += _delta(now.prefix_hits, then.prefix_hits if then else None)
            requests[name] = int(_delta(now.requests_success, then.requests_success if then else None))
            earlier = dict(then.ttft_buckets or ()) if then else {}
            deltas.append(
                tuple((edge, _delta(count, earlier.get(edge))) for edge, count in now.ttft_buckets or ())
            )
        buckets = merge_buckets(deltas)
        counts = list(requests.values())
        mean = sum(counts) / len(counts) if counts else 0.0
        return cls(
            hit_rate=hits / queries if queries else None,
            ttft_p50_s=quantile(buckets, 0.50),
            ttft_p95_s=quantile(buckets, 0.95),
            imbalance=max(counts) / mean if mean else None,
            requests=requests,
            prefix_queries=queries,
            prefix_hits=hits,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "hit_rate": self.hit_rate,
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p95_s": self.ttft_p95_s,
            "imbalance": self.imbalance,
            "requests": self.requests,
            "prefix_queries": self.prefix_queries,
            "prefix_hits": self.prefix_hits,
        }


def _delta(now: float | None, then: float | None) -> float:
    if now is None:
        return 0.0
    return now if then is None else increase(now, then)


async def scrape(http: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, ReplicaStats]:
    """One ``/metrics`` scrape of every replica; replicas that do not answer are left out."""

    async def one(name: str, url: str) -> tuple[str, ReplicaStats | None]:
        try:
            response = await http.get(f"{url}/metrics")
            response.raise_for_status()
        except httpx.HTTPError:
            return name, None
        return name, parse_metrics(response.text)

    results = await asyncio.gather(*(one(name, url) for name, url in urls.items()))
    return {name: stats for name, stats in results if stats is not None}


# ---- the scripted scenario ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One scenario step at a fraction of the scenario's span."""

    at: float
    text: str
    action: Callable[[], Awaitable[object]]


class Scenario:
    """Membership change, failure and recovery, drain and undrain, spread over ``span_s``.

    It only uses the admin API and the simulator's fault endpoint, like an operator and a flaky
    GPU would. Steps that fail are reported and skipped; the demo goes on.
    """

    def __init__(
        self,
        admin: AdminClient,
        http: httpx.AsyncClient,
        urls: dict[str, str],
        fleet: DemoFleet,
        span_s: float,
        on_event: Callable[[str], None],
    ) -> None:
        self.span_s = span_s
        self.on_event = on_event
        routed = [name for name, _ in fleet.routed]
        flaky, drained = routed[1], routed[2 % len(routed)]

        async def faults(name: str, **changes: Any) -> None:
            response = await http.post(f"{urls[name]}/sim/faults", json=changes)
            response.raise_for_status()

        steps: list[Step] = []
        if fleet.spare is not None:
            spare = fleet.spare
            replica = ReplicaIn(name=spare, url=urls[spare], group=fleet.spare_group)
            steps.append(
                Step(
                    0.15, f"+ {spare} joins the fleet (membership change)", lambda: admin.add_replica(replica)
                )
            )
        steps += [
            Step(
                0.30,
                f"! {flaky} fails its health checks (simulated fault)",
                lambda: faults(flaky, unhealthy=True),
            ),
            Step(0.48, f"+ {flaky} recovers", lambda: faults(flaky, unhealthy=False)),
            Step(0.60, f"~ {drained} is drained (operator)", lambda: admin.drain(drained)),
            Step(0.80, f"+ {drained} is undrained", lambda: admin.undrain(drained)),
        ]
        self.steps = steps

    async def run(self, started: float) -> None:
        for step in self.steps:
            delay = started + step.at * self.span_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await step.action()
            except (AdminError, httpx.HTTPError) as exc:
                self.on_event(f"{time.monotonic() - started:6.1f}s  {step.text}: failed ({exc})")
                continue
            self.on_event(f"{time.monotonic() - started:6.1f}s  {step.text}")


# ---- one demo run -------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What one run measured: the client's view and the replicas' own counters."""

    policy: str
    load: LoadSummary
    counters: FleetCounters
    drift_moves: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "fleet": self.counters.to_dict(),
            "client": self.load.to_dict(),
            "drift_moves_by_cause": self.drift_moves,
            "events": self.events,
        }


class DemoRun:
    """Start the children, run traffic (and optionally the scenario), measure, stop everything.

    Use as ``async with DemoRun(...) as demo: result = await demo.run(stop)``; leaving the block
    stops every child whatever happened. ``on_event`` receives one-line progress messages.
    ``precise`` (the default) routes on the replicas' own KV-cache events, the approximate index
    standing in only where a replica's events are not live.
    """

    def __init__(
        self,
        *,
        fleet: DemoFleet | None = None,
        workload: Workload | None = None,
        policy: str = "tiered",
        precise: bool = True,
        duration_s: float | None = 60.0,
        scenario: bool = True,
        scenario_span_s: float = 60.0,
        warmup_s: float = 0.0,
        listen: str = "127.0.0.1:0",
        admin_listen: str = "127.0.0.1:0",
        on_event: Callable[[str], None] | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.fleet = fleet or DemoFleet()
        self.workload = workload or demo_workload()
        self.policy = policy
        self.precise = precise
        self.duration_s = duration_s
        self.scenario = scenario
        self.warmup_s = warmup_s
        self.scenario_span_s = duration_s if duration_s is not None else scenario_span_s
        self.listen = listen
        self.admin_listen = admin_listen
        self.on_event = on_event or (lambda _: None)
        self.token = secrets.token_urlsafe(16)
        self._own_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="pcache-demo-"))
        self.replica_urls: dict[str, str] = {}
        self.router_url = ""
        self.admin_url = ""
        self.events: list[str] = []
        self.sim: ChildProcess | None = None
        self.router: ChildProcess | None = None
        self._reaper = Reaper()
        self._http = httpx.AsyncClient(timeout=5.0)

    @property
    def children(self) -> list[ChildProcess]:
        return [child for child in (self.sim, self.router) if child is not None]

    def _event(self, text: str) -> None:
        self.events.append(text)
        self.on_event(text)

    async def __aenter__(self) -> DemoRun:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the reaper, the simulator and the router; return once all are ready."""
        await self._reaper.start()
        fleet_path = self.work_dir / "fleet.yaml"
        fleet_path.write_text(yaml.safe_dump(fleet_document(self.fleet), sort_keys=False))
        self.sim = ChildProcess(
            "sim",
            [sys.executable, "-m", "pcache.sim", "--config", str(fleet_path), "--base-port", "0"],
            self.work_dir,
        )
        lines = await self._start_child(self.sim)
        for line in lines:
            words = line.split()
            if len(words) == 3 and words[0] == "replica":
                self.replica_urls[words[1]] = words[2]
        prompt_dir = self.work_dir / "prompts"
        prompt_dir.mkdir(exist_ok=True)
        for prompt in self.workload.prompts:
            (prompt_dir / f"{prompt.name}.txt").write_text(prompt.text, encoding="utf-8")
        document = router_document(
            self.fleet,
            self.replica_urls,
            self.workload.prompts,
            policy=self.policy,
            listen=self.listen,
            admin_listen=self.admin_listen,
            kv_events=await self._kv_event_sources() if self.precise else None,
        )
        router_path = self.work_dir / "router.yaml"
        router_path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.router = ChildProcess(
            "router",
            [sys.executable, "-m", "pcache.router", "-c", str(router_path)],
            self.work_dir,
            env={TOKEN_ENV: self.token},
        )
        for line in await self._start_child(self.router):
            kind, _, value = line.partition(" ")
            if kind == "data":
                self.router_url = value
            elif kind == "admin":
                self.admin_url = value
        if not self.router_url or not self.admin_url:
            raise DemoError("the router did not announce its data and admin URLs")

    async def _kv_event_sources(self) -> dict[str, dict[str, Any]]:
        """Each routed replica's KV-event endpoints, from its ``/kv_event_sources``."""
        entries: dict[str, dict[str, Any]] = {}
        for name, _ in self.fleet.routed:
            response = await self._http.get(f"{self.replica_urls[name]}/kv_event_sources")
            sources = response.json() if response.status_code == 200 else {}
            if isinstance(sources, dict) and isinstance(sources.get("0"), dict):
                entries[name] = kv_events_entry(sources["0"])
        return entries

    async def _start_child(self, child: ChildProcess) -> list[str]:
        self._reaper.watch(await child.spawn())  # before anything can go wrong in the demo
        try:
            return await child.wait_ready()
        except ChildError as exc:
            raise DemoError(str(exc)) from exc

    async def close(self) -> None:
        """Stop every child (router first, so no request is in flight to a dead replica)."""
        for child in reversed(self.children):
            await child.stop()
        await self._reaper.stop()
        await self._http.aclose()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def admin(self) -> AdminClient:
        return AdminClient(self.admin_url, token=self.token)

    async def status(self) -> StatusSnapshot:
        async with self.admin() as admin:
            return await admin.status()

    async def _watch_children(self) -> None:
        """Return (raise) as soon as any child exits: the demo cannot go on without it."""
        waits = {asyncio.create_task(child.wait()): child for child in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        child = waits[next(iter(done))]
        code = child.process.returncode if child.process else None
        tail = child.log_tail(3)
        raise ChildCrashed(f"{child.name} exited unexpectedly (code {code})" + (f": {tail}" if tail else ""))

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        on_status: Callable[[StatusSnapshot], None] | None = None,
        status_every_s: float = 5.0,
    ) -> DemoResult:
        """Traffic until the duration ends or ``stop`` is set; raises :class:`ChildCrashed` on a crash."""
        stop = stop or asyncio.Event()
        total_s = (self.duration_s or math.inf) + self.warmup_s
        limits = LoadLimits(duration_s=total_s, grace_s=5.0)
        generator = LoadGenerator(self.router_url, self.workload, limits)
        admin = self.admin()
        started = time.monotonic()
        tasks: list[asyncio.Task[Any]] = []
        try:
            before = await scrape(self._http, self.replica_urls)
            load = asyncio.create_task(generator.run(stop))
            watcher = asyncio.create_task(self._watch_children())
            tasks = [load, watcher]
            if self.warmup_s:
                await asyncio.wait(
                    [load, watcher], timeout=self.warmup_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not watcher.done():
                    before = await scrape(self._http, self.replica_urls)  # measure the steady state only
            if self.scenario:
                scenario = Scenario(
                    admin, self._http, self.replica_urls, self.fleet, self.scenario_span_s, self._event
                )
                tasks.append(asyncio.create_task(scenario.run(started)))
            if on_status is not None:
                tasks.append(asyncio.create_task(self._report_status(admin, on_status, status_every_s)))
            await asyncio.wait([load, watcher], return_when=asyncio.FIRST_COMPLETED)
            if load.done() and load.exception() is not None and not watcher.done():
                # Traffic failing outright is most often a child dying: give the watcher a moment.
                await asyncio.wait([watcher], timeout=1.0)
            if watcher.done():
                stop.set()
                watcher.result()  # raises ChildCrashed
            try:
                summary = load.result()
            except RuntimeError as exc:
                raise DemoError(f"traffic could not run: {exc}") from exc
            after = await scrape(self._http, self.replica_urls)
            drift: dict[str, int] = {}
            with contextlib.suppress(AdminError):
                drift = (await admin.drift(since_s=time.monotonic() - started + 5)).moves_by_cause
            return DemoResult(
                self.policy, summary, FleetCounters.between(before, after), drift, list(self.events)
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await generator.aclose()
            await admin.aclose()

    async def _report_status(
        self, admin: AdminClient, on_status: Callable[[StatusSnapshot], None], every_s: float
    ) -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(AdminError):
                on_status(await admin.status())


async def run_compare(
    policies: Sequence[str] = ("round_robin", "tiered"),
    *,
    duration_s: float = 30.0,
    warmup_s: float = 15.0,
    fleet: DemoFleet | None = None,
    workload: Workload | None = None,
    stop: asyncio.Event | None = None,
    on_event: Callable[[str], None] | None = None,
) -> list[DemoResult]:
    """The same seeded traffic through each policy in turn, each on a fresh fleet (empty caches).

    Counters are measured after ``warmup_s`` of traffic, so the table shows the steady state with
    conversations of every age rather than the first seconds of a cold fleet.
    """
    fleet = replace(fleet or DemoFleet(), spare_group=None)
    results: list[DemoResult] = []
    for policy in policies:
        if stop is not None and stop.is_set():
            break
        if on_event is not None:
            on_event(f"{policy}: fresh fleet, {warmup_s:.0f}s warm-up, then {duration_s:.0f}s measured")
        async with DemoRun(
            fleet=fleet,
            workload=workload,
            policy=policy,
            duration_s=duration_s,
            warmup_s=warmup_s,
            scenario=False,
            on_event=on_event,
        ) as demo:
            results.append(await demo.run(stop))
    return results
