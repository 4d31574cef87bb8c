"""Operator actions with their real semantics; every change is persisted before it takes effect.

- drain: Tier-1 prefixes the replica owned are prewarmed on their successors first, then the
  replica takes no new sessions (its sessions re-home on their next request, by the policy) and
  becomes ``drained`` once nothing is in flight. Draining the last routable replica needs ``force``.
- add: the new replica is checked, the Tier-1 prefixes it will own under HRW are prewarmed on it,
  and only then does it become routable, so scale-out costs no burst of cold misses.
- remove: like drain (successors prewarmed first), then the replica leaves the fleet.
- pin / unpin: Tier-1 prefixes pinned to replicas or k copies, optionally prewarmed.
- prewarm: background jobs (see :mod:`pcache.prewarm`).

Errors are :class:`ActionError` with an HTTP status and a code (and a store that cannot take the
write raises :class:`~pcache.state.StateError`, also with a status); the admin API turns both into
OpenAI-style bodies. Every store call is awaited before the change is applied to the live fleet,
so a write the store refused never takes effect. :meth:`OperatorActions.apply` brings the live fleet
in line with the store when another router (or worker) wrote it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import xxhash

from pcache.api import BlastRadius, HandoverPrewarm, PinIn, PinOut, PrewarmIn, PrewarmJob
from pcache.engines import UnknownEngine, metrics_path, parse_metrics
from pcache.fleet import Fleet, UnknownReplica
from pcache.fleet_view import FleetView, ReplicaState, ReplicaView, Tier1Prefix
from pcache.prewarm import PrewarmJobs, PrewarmTarget
from pcache.router.config import (
    ConfigError,
    RouterConfig,
    Tier1Config,
    check_engine,
    check_replica_url,
)
from pcache.router.routing import Routing
from pcache.router.upstream import Upstream, UpstreamError
from pcache.router.watcher import FleetWatcher
from pcache.state import OperatorState, ReplicaRecord, StateError, StateStore, Tier1Record

__all__ = ["ActionError", "OperatorActions"]

log = logging.getLogger("pcache.router.actions")

_TEXT_HEAD = 80


class ActionError(Exception):
    """An operator action that was refused or named something unknown."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


_PIN_SOURCES: dict[str, Literal["config", "pin", "auto", "prewarm"]] = {
    "config": "config",
    "auto": "auto",
    "prewarm": "prewarm",
}


def _not_found(kind: str, name: str) -> ActionError:
    return ActionError(404, f"unknown {kind} {name!r}", f"unknown_{kind.replace(' ', '_')}")


def _as(value: str) -> Literal["chat", "completion"]:
    return "completion" if value == "completion" else "chat"


def _with_state(view: FleetView, name: str, state: ReplicaState | None) -> tuple[ReplicaView, ...]:
    """The view's replicas with ``name`` set to ``state`` (or left out when None)."""
    out = []
    for replica in view.replicas:
        if replica.name == name:
            if state is None:
                continue
            replica = dataclasses.replace(replica, state=state)
        out.append(replica)
    return tuple(out)


class OperatorActions:
    """Drain, undrain, add, remove, pin, unpin and prewarm, on the live fleet and the state store."""

    def __init__(
        self,
        *,
        config: RouterConfig,
        store: StateStore,
        fleet: Fleet,
        routing: Routing,
        watcher: FleetWatcher,
        upstream: Upstream,
    ) -> None:
        self.config = config
        self.store = store
        self.fleet = fleet
        self.routing = routing
        self.watcher = watcher
        self.upstream = upstream
        self._records: dict[str, Tier1Record] = {}  # every Tier-1 prefix with its text, by name
        self._models: dict[str, str] = {}
        # Held by every store write and its local effect, and by :meth:`sync`: a reload that began
        # before one of this router's writes can never undo that write locally.
        self._writing = asyncio.Lock()
        self._seen_version: int | None = None
        self.jobs = PrewarmJobs(self._send_prewarm, self._model_of, external_hits=self._external_hits)

    # ---- start-up -------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Build the fleet and Tier-1 registry from the config plus the durable operator state."""
        self._seen_version = await self.store.version()
        state = await self.store.load()
        for replica in self.config.replicas:
            if replica.name in state.removed and replica.name not in state.replicas:
                continue
            self.fleet.add(
                replica.name, replica.url, engine=replica.engine, group=replica.group, weight=replica.weight
            )
        for record in state.replicas.values():
            if record.name not in self.fleet:
                self.fleet.add(
                    record.name,
                    record.url,
                    engine=record.engine,
                    group=record.group,
                    weight=record.weight,
                    source="runtime",
                )
        for name in state.drains:
            if name in self.fleet:
                # Nothing is in flight through this router at start-up: draining is drained here.
                self.fleet.set_drain(name, "draining")
        for prefix in self.config.tier1:
            configured = self._config_record(prefix)
            if not self.routing.blocks_of(configured.text, configured.as_):
                raise ConfigError(
                    f"tier1 {prefix.name!r} is shorter than one routing block "
                    f"({self.routing.config.chunk_chars} characters): no request could ever match it"
                )
        self._records = self._records_of(state)
        self._publish_tier1()
        if not self.store.shared:  # shared: the coordinator marks drained when every router is idle
            for name, drain in state.drains.items():
                if name in self.fleet and drain != "drained":
                    await self.store.set_drain(name, "drained")
        log.info(
            "restored %d replicas (%d drained/draining), %d Tier-1 prefixes",
            len(self.fleet.entries()),
            len(state.drains),
            len(self._records),
        )

    async def stop(self) -> None:
        await self.jobs.stop()

    def _records_of(self, state: OperatorState) -> dict[str, Tier1Record]:
        """Every Tier-1 record: the config's, replaced by the store's where it has one."""
        records = {prefix.name: self._config_record(prefix) for prefix in self.config.tier1}
        records.update(state.tier1)
        return records

    async def sync(self) -> list[str]:
        """Reload the store if any writer changed it since the last look, and apply it.

        Raises :class:`~pcache.state.StateError` when the store cannot be read; the live state
        is then left as it was (the last known state keeps serving).
        """
        async with self._writing:
            version = await self.store.version()
            if version == self._seen_version:
                return []
            state = await self.store.load()
            self._seen_version = version
            return self.apply(state)

    async def record_drained(self, name: str) -> None:
        """Persist that a draining replica finished (nothing in flight through this router)."""
        if self.store.shared:
            return  # other routers may still have requests on it: the coordinator decides
        async with self._writing:
            if name in self.fleet and self.fleet.get(name).drain == "drained":
                await self.store.set_drain(name, "drained")

    def apply(self, state: OperatorState) -> list[str]:
        """Bring the live fleet and Tier-1 registry in line with ``state`` (written elsewhere).

        Returns what changed, for the log. Drains apply as ``draining``: a replica is drained here
        once nothing is in flight through this router. A replica another router added joins here
        through this router's own health checks.
        """
        changes: list[str] = []
        for name in sorted(state.removed - set(state.replicas)):
            if name in self.fleet:
                self.fleet.remove(name)
                self.routing.policy.forget_replica(name)
                self.watcher.forget(name)
                changes.append(f"removed {name}")
        for record in state.replicas.values():
            if record.name not in self.fleet:
                self.fleet.add(
                    record.name,
                    record.url,
                    engine=record.engine,
                    group=record.group,
                    weight=record.weight,
                    source="runtime",
                    joining=True,
                )
                if not record.joining:  # else held out until the adding router says it is prewarmed
                    self.fleet.finish_joining(record.name, routable=False)  # routable once it answers
                changes.append(f"added {record.name}")
            elif not record.joining and self.fleet.get(record.name).joining:
                self.fleet.finish_joining(record.name, routable=False)
                changes.append(f"{record.name} joined")
        for entry in self.fleet.entries():
            wanted = state.drains.get(entry.name)
            if wanted is None and entry.drain is not None:
                self.fleet.set_drain(entry.name, None)
                changes.append(f"undrained {entry.name}")
            elif wanted is not None and entry.drain is None:
                self.fleet.set_drain(entry.name, "draining")
                changes.append(f"draining {entry.name}")
        records = self._records_of(state)
        if records != self._records:
            changed = sorted(
                n for n in set(records) | set(self._records) if records.get(n) != self._records.get(n)
            )
            self._records = records
            self._publish_tier1()
            changes.append(f"Tier-1 {', '.join(changed)}")
        return changes

    def _config_record(self, prefix: Tier1Config) -> Tier1Record:
        """The record of a Tier-1 prefix defined in the config file."""
        return Tier1Record(
            name=prefix.name,
            text=self.config.tier1_text(prefix),
            as_=prefix.as_,
            copies=prefix.copies,
            replicas=tuple(prefix.replicas),
            group=prefix.group,
            source="config",
        )

    def _prefix(self, record: Tier1Record) -> Tier1Prefix:
        return Tier1Prefix(
            name=record.name,
            blocks=self.routing.blocks_of(record.text, record.as_),
            copies=record.copies,
            pinned=tuple(record.replicas),
            group=record.group,
            source=record.source,
        )

    def _publish_tier1(self) -> None:
        self.routing.set_tier1(self._prefix(r) for r in self._records.values())

    # ---- reading --------------------------------------------------------------------------------

    def pin_out(
        self, record: Tier1Record, owners: dict[str, list[str]] | None = None, job: str | None = None
    ) -> PinOut:
        owners = owners if owners is not None else self.routing.owners()
        source = _PIN_SOURCES.get(record.source, "pin")
        return PinOut(
            name=record.name,
            source=source,
            text_head=record.text[:_TEXT_HEAD],
            tokens=self.routing.prefix_tokens(record.text, record.as_),  # calibrated on the engines
            replicas=list(record.replicas),
            copies=record.copies,
            group=record.group,
            owners=owners.get(record.name, []),
            prewarm_job=job,
        )

    def pins(self) -> list[PinOut]:
        owners = self.routing.owners()
        return [self.pin_out(r, owners) for _, r in sorted(self._records.items())]

    def texts(self) -> dict[str, str]:
        return {name: r.text[:_TEXT_HEAD] for name, r in self._records.items()}

    # ---- blast radius ---------------------------------------------------------------------------

    def _successors(self, name: str, state: ReplicaState | None) -> dict[str, list[str]]:
        """For each Tier-1 prefix ``name`` owns now, its owners once ``name`` is in ``state``."""
        view = self.fleet.view()
        after = FleetView(replicas=_with_state(view, name, state), tier1=view.tier1)
        return {
            prefix_name: self.routing.owners_of(prefix, after)
            for prefix_name, prefix in view.tier1.items()
            if name in self.routing.owners_of(prefix, view)
        }

    def _radius(self, name: str, state: ReplicaState | None, dry_run: bool) -> BlastRadius:
        entry = self.fleet.get(name)
        moves = self._successors(name, state)
        routable = self.fleet.routable_names()
        return BlastRadius(
            replica=name,
            state=entry.state.value,
            in_flight=entry.in_flight,
            sessions=self.routing.policy.session_homes().get(name, 0),
            tier1=[BlastRadius.Tier1Move(prefix=p, successors=s) for p, s in sorted(moves.items())],
            last_routable=routable == [name],
            dry_run=dry_run,
        )

    async def _warm_successors(self, moves: dict[str, list[str]], exclude: str) -> HandoverPrewarm | None:
        """Prewarm each moving prefix on its new owners (that are not already owners); wait for it."""
        owners = self.routing.owners()
        targets = []
        for prefix_name, successors in sorted(moves.items()):
            record = self._records.get(prefix_name)
            fresh = tuple(r for r in successors if r != exclude and r not in owners.get(prefix_name, []))
            if record is None or not fresh:
                continue
            targets.append(
                PrewarmTarget(prefix_name, record.text, _as(record.as_), fresh, f"successor of {exclude}")
            )
        if not targets:
            return None
        return await self._handover(targets)

    async def _handover(self, targets: Sequence[PrewarmTarget]) -> HandoverPrewarm:
        """Run a handover prewarm and wait for it (bounded); failed pairs are logged and returned."""
        job = self.jobs.start(targets, concurrency=self.config.prewarm.concurrency, verify=False)
        finished = await self.jobs.wait(job.id, self.config.prewarm.handoff_wait_s) or job
        failed = [pair for pair in finished.results if pair.ok is False]
        result = HandoverPrewarm(
            job=finished.id,
            total=finished.total,
            ok=sum(1 for pair in finished.results if pair.ok),
            failed=failed,
            unfinished=sum(1 for pair in finished.results if pair.ok is None),
        )
        for pair in failed:
            log.warning("handover prewarm of %s on %s failed: %s", pair.prefix, pair.replica, pair.error)
        return result

    def _recheck_after_warming(self, name: str, force: bool, verb: str, verb_ing: str) -> None:
        """Other writes ran while successors were warming: the replica may be gone or the last one."""
        if name not in self.fleet:
            raise _not_found("replica", name)
        if not force and self.fleet.routable_names() == [name]:
            raise ActionError(
                409,
                f"{name} became the last routable replica while its successors were warming; "
                f"{verb_ing} it leaves nothing to serve requests (pass force=true to {verb} anyway)",
                "last_routable",
            )

    # ---- drain / undrain ------------------------------------------------------------------------

    async def drain(self, name: str, *, dry_run: bool = False, force: bool = False) -> BlastRadius:
        if name not in self.fleet:
            raise _not_found("replica", name)
        entry = self.fleet.get(name)
        radius = self._radius(name, ReplicaState.DRAINING, dry_run)
        if dry_run or entry.drain is not None:
            return radius
        if radius.last_routable and not force:
            raise ActionError(
                409,
                f"{name} is the last routable replica; draining it leaves nothing to serve requests "
                "(pass force=true to drain anyway)",
                "last_routable",
            )
        moves = {m.prefix: m.successors for m in radius.tier1}
        handover = await self._warm_successors(moves, name)
        async with self._writing:
            self._recheck_after_warming(name, force, "drain", "draining")
            await self.store.set_drain(name, "draining", keep_routable=self._others(name, force))
            self.fleet.set_drain(name, "draining")
            if self.fleet.get(name).drain == "drained" and not self.store.shared:
                await self.store.set_drain(name, "drained")
        log.info("drain of %s started (%d in flight, %d sessions)", name, radius.in_flight, radius.sessions)
        return radius.model_copy(
            update={
                "state": self.fleet.get(name).state.value,
                "prewarm_job": handover.job if handover else None,
                "handover": handover,
            }
        )

    def _others(self, name: str, force: bool) -> list[str]:
        """The store's guard for draining or removing ``name``: the other routable replicas."""
        return [] if force else [n for n in self.fleet.routable_names() if n != name]

    async def undrain(self, name: str) -> None:
        if name not in self.fleet:
            raise _not_found("replica", name)
        async with self._writing:
            await self.store.set_drain(name, None)
            self.fleet.set_drain(name, None)
        log.info("replica %s undrained", name)

    # ---- membership -----------------------------------------------------------------------------

    async def add_replica(
        self, name: str, url: str, engine: str, group: str | None, weight: float
    ) -> HandoverPrewarm | None:
        """Add ``name``; returns the prewarm of the Tier-1 prefixes it will own (``None``: none)."""
        if name in self.fleet:
            raise ActionError(409, f"replica {name!r} already exists", "replica_exists")
        try:
            url = check_replica_url(url)
        except ValueError as exc:
            raise ActionError(422, f"url {exc}", "invalid_url") from None
        try:
            check_engine(engine)
        except ValueError as exc:
            raise ActionError(422, str(exc), "unknown_engine") from None
        record = ReplicaRecord(
            name=name, url=url.rstrip("/"), engine=engine, group=group, weight=weight, joining=True
        )
        async with self._writing:
            await self.store.put_replica(record)
            # Not routable until it answered a health check and holds the Tier-1 prefixes it will own.
            self.fleet.add(
                name, record.url, engine=engine, group=group, weight=weight, source="runtime", joining=True
            )
        if not await self.watcher.check(name):
            await self._joined(record, routable=False)
            log.warning("new replica %s failed its first health check; it joins when it recovers", name)
            return None
        await self.watcher.scrape_one(name)
        view = self.fleet.view()
        after = FleetView(replicas=_with_state(view, name, ReplicaState.HEALTHY), tier1=view.tier1)
        targets = []
        for prefix in self.fleet.tier1.values():
            if not prefix.pinned and name in self.routing.owners_of(prefix, after):
                record_t = self._records.get(prefix.name)
                if record_t is not None:
                    targets.append(
                        PrewarmTarget(
                            prefix.name, record_t.text, _as(record_t.as_), (name,), "new owner (scale-out)"
                        )
                    )
        handover = await self._handover(targets) if targets else None
        await self._joined(record, routable=True)
        log.info("replica %s added (%d Tier-1 prefixes prewarmed)", name, len(targets))
        return handover

    async def _joined(self, record: ReplicaRecord, *, routable: bool) -> None:
        """End the joining phase here and in the store (the other routers admit it then)."""
        async with self._writing:
            try:
                await self.store.put_replica(dataclasses.replace(record, joining=False))
            except StateError as exc:  # it serves here; a restart or the next write repairs the store
                log.warning("could not record that %s joined: %s", record.name, exc.message)
            if record.name in self.fleet:
                self.fleet.finish_joining(record.name, routable=routable)

    async def remove_replica(self, name: str, *, force: bool = False) -> BlastRadius:
        if name not in self.fleet:
            raise _not_found("replica", name)
        radius = self._radius(name, None, False)
        if radius.last_routable and not force:
            raise ActionError(
                409,
                f"{name} is the last routable replica; removing it leaves nothing to serve requests "
                "(pass force=true to remove anyway)",
                "last_routable",
            )
        pinned_by = sorted(p for p, r in self._records.items() if name in r.replicas)
        moves = {m.prefix: m.successors for m in radius.tier1}
        handover = await self._warm_successors(moves, name)
        async with self._writing:
            self._recheck_after_warming(name, force, "remove", "removing")
            await self.store.remove_replica(name, keep_routable=self._others(name, force))
            self.fleet.remove(name)
            self.routing.policy.forget_replica(name)
            self.watcher.forget(name)
        if pinned_by:
            log.warning("removed replica %s was pinned by %s", name, ", ".join(pinned_by))
        log.info("replica %s removed", name)
        return radius.model_copy(
            update={
                "state": "removed",
                "prewarm_job": handover.job if handover else None,
                "handover": handover,
            }
        )

    # ---- pins -----------------------------------------------------------------------------------

    def _check_replicas(self, names: Iterable[str]) -> None:
        unknown = [n for n in names if n not in self.fleet]
        if unknown:
            raise ActionError(422, f"unknown replicas: {', '.join(unknown)}", "unknown_replica")

    def _checked_record(
        self,
        name: str,
        text: str,
        as_: str,
        replicas: Sequence[str] | None,
        copies: int | None,
        group: str | None,
        source: str,
    ) -> Tier1Record:
        self._check_replicas(replicas or ())
        record = Tier1Record(
            name=name,
            text=text,
            as_=as_,
            copies=copies or (len(replicas) if replicas else 1),
            replicas=tuple(replicas or ()),
            group=group,
            source=source,
        )
        if not self.routing.blocks_of(text, as_):
            raise ActionError(
                422,
                f"prefix {name!r} is shorter than one routing block "
                f"({self.routing.config.chunk_chars} characters); it could never match a request",
                "prefix_too_short",
            )
        return record

    async def pin(self, name: str, pin: PinIn) -> PinOut:
        text: str | None = pin.text
        as_: str = pin.as_
        if text is None:
            known = self._records.get(name)
            if known is None:
                raise ActionError(
                    422,
                    f"Tier-1 prefix {name!r} is not registered: give its text to pin it",
                    "text_required",
                )
            text = known.text
            as_ = pin.as_ if "as_" in pin.model_fields_set else known.as_
        record = self._checked_record(name, text, as_, pin.replicas, pin.copies, pin.group, "pin")
        async with self._writing:
            await self.store.put_tier1(record)
            self._records[name] = record
            self._publish_tier1()
        job_id = None
        if pin.prewarm:
            owners = self.routing.owners().get(name, [])
            if owners:
                job = self.jobs.start(
                    [PrewarmTarget(name, record.text, _as(record.as_), tuple(owners), "pinned")],
                    concurrency=self.config.prewarm.concurrency,
                    verify=False,
                )
                await self.jobs.wait(job.id, self.config.prewarm.handoff_wait_s)
                job_id = job.id
        log.info(
            "pinned Tier-1 prefix %s (replicas=%s, copies=%d)", name, list(record.replicas), record.copies
        )
        return self.pin_out(record, job=job_id)

    async def unpin(self, name: str) -> PinOut:
        record = self._records.get(name)
        if record is None:
            raise _not_found("pin", name)
        configured = next((p for p in self.config.tier1 if p.name == name), None)
        if record.source == "config":
            raise ActionError(
                409,
                f"Tier-1 prefix {name!r} is defined in the config file; remove it there",
                "defined_in_config",
            )
        out = self.pin_out(record)
        async with self._writing:
            await self.store.delete_tier1(name)
            if configured is not None:
                self._records[name] = self._config_record(configured)
            else:
                self._records.pop(name, None)
            self._publish_tier1()
        log.info("unpinned Tier-1 prefix %s", name)
        return out

    # ---- prewarm --------------------------------------------------------------------------------

    def _pool_plan(self, request: PrewarmIn) -> list[PrewarmTarget]:
        """Each prefix once, for the fleet's shared pool: sent to the least loaded routable replica
        (or the first one named), verified on another."""
        view = self.fleet.view()
        routable = sorted(
            (r for r in view.replicas if r.state is ReplicaState.HEALTHY), key=lambda r: (r.load, r.name)
        )
        targets = []
        for index, prefix in enumerate(request.prefixes):
            name = prefix.name or f"prefix-{xxhash.xxh3_64_hexdigest(prefix.text.encode())[:12]}"
            named = prefix.replicas if prefix.replicas is not None else request.replicas
            if named:
                self._check_replicas(named)
                order = list(named) + [r.name for r in routable if r.name not in named]
            else:
                order = [r.name for r in routable]
            if not order:
                raise ActionError(409, "no healthy replica to warm the pool through", "no_replica")
            via = order[index % len(order)] if not named else order[0]
            probe = next((r for r in order if r != via), None)
            why = "once for the shared pool" + (f", verified on {probe}" if probe else "")
            targets.append(PrewarmTarget(name, prefix.text, request.as_, (via,), why, probe_on=probe))
        return targets

    def _plan(self, request: PrewarmIn) -> tuple[list[PrewarmTarget], list[Tier1Record]]:
        if request.tier == "pool":
            if request.pin:
                raise ActionError(
                    422, "pin does not apply to tier pool (every replica reads the pool)", "pin_with_pool"
                )
            return self._pool_plan(request), []
        view = self.fleet.view()
        targets: list[PrewarmTarget] = []
        pins: list[Tier1Record] = []
        for prefix in request.prefixes:
            name = prefix.name or f"prefix-{xxhash.xxh3_64_hexdigest(prefix.text.encode())[:12]}"
            replicas = prefix.replicas if prefix.replicas is not None else request.replicas
            copies = prefix.copies if prefix.copies is not None else request.copies
            if replicas:
                self._check_replicas(replicas)
                chosen, why = tuple(replicas), "explicit"
            else:
                blocks = self.routing.blocks_of(prefix.text, request.as_)
                if not blocks:
                    raise ActionError(
                        422,
                        f"prefix {name!r} is shorter than one routing block "
                        f"({self.routing.config.chunk_chars} characters)",
                        "prefix_too_short",
                    )
                existing = self._records.get(name)
                k = copies or (existing.copies if existing else 1)
                if existing is not None and existing.replicas:
                    chosen, why = tuple(existing.replicas), "pinned"
                else:
                    probe = Tier1Prefix(name=name, blocks=blocks, copies=k)
                    chosen, why = tuple(self.routing.owners_of(probe, view)), f"top-{k} of HRW ranking"
            targets.append(PrewarmTarget(name, prefix.text, request.as_, chosen, why))
            if request.pin:
                pins.append(
                    self._checked_record(name, prefix.text, request.as_, replicas, copies, None, "pin")
                )
        return targets, pins

    def _steering_records(self, request: PrewarmIn, targets: Sequence[PrewarmTarget]) -> list[Tier1Record]:
        """Tier-1 registrations that make traffic follow a prewarm without ``pin``.

        A prefix warmed on replicas the router does not associate with it is a wasted prefill: the
        next request of a new session would be routed by its session key to any replica. Each
        prefix the router does not know yet is registered (source ``prewarm``) with the owners being
        warmed: the same top-k of its HRW ranking (``copies``), or the explicit replicas as its only
        candidates. Prefixes already registered or pinned keep their registration.
        """
        records = []
        for target in targets:
            if target.prefix in self._records or not target.replicas:
                continue
            explicit = target.why == "explicit"
            records.append(
                Tier1Record(
                    name=target.prefix,
                    text=target.text,
                    as_=request.as_,
                    copies=len(target.replicas),
                    replicas=target.replicas if explicit else (),
                    source="prewarm",
                )
            )
        return records

    async def prewarm(self, request: PrewarmIn) -> PrewarmJob:
        targets, pins = self._plan(request)
        if request.dry_run:
            return self.jobs.plan(targets)
        # a prefix in the shared pool is cheap on every replica: traffic need not follow it
        registered = (
            []
            if request.tier == "pool"
            else pins
            if request.pin
            else self._steering_records(request, targets)
        )
        async with self._writing:
            for record in registered:
                await self.store.put_tier1(record)
                self._records[record.name] = record
            if registered:
                self._publish_tier1()
        return self.jobs.start(targets, concurrency=request.concurrency, verify=request.verify)

    async def _model_of(self, replica: str) -> str | None:
        if self.config.prewarm.model:
            return self.config.prewarm.model
        cached = self._models.get(replica)
        if cached is not None:
            return cached
        entry = self.fleet.get(replica)
        model = entry.stats.model if entry.stats is not None else None
        if model is None:
            try:
                result = await self.upstream.fetch(entry.url + "/v1/models", self.config.scrape.timeout_s)
                data: Any = json.loads(result.body).get("data") if result.status == 200 else None
                if isinstance(data, list) and data and isinstance(data[0], dict):
                    model = data[0].get("id")
            except (UpstreamError, ValueError, AttributeError):
                model = None
        if isinstance(model, str):
            self._models[replica] = model
            return model
        return None

    async def _external_hits(self, replica: str) -> float | None:
        """The replica's engine-counted cache hits from outside its GPU (host, pool...), read from
        its /metrics now (not the last scrape: a prewarm's verification needs the probe's own)."""
        try:
            entry = self.fleet.get(replica)
            result = await self.upstream.fetch(
                entry.url + metrics_path(entry.detected_engine or "vllm"),
                self.config.scrape.timeout_s,
                self.config.scrape.max_bytes,
            )
        except (UpstreamError, UnknownReplica, UnknownEngine):
            return None
        if result.status != 200:
            return None
        stats = await asyncio.to_thread(parse_metrics, result.body.decode("utf-8", "replace"))
        if stats.hits_by_tier is None:
            return None
        return sum(tokens for tier, tokens in stats.hits_by_tier if tier != "gpu")

    async def _send_prewarm(self, replica: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        url = self.fleet.url(replica) + path
        self.fleet.begin(replica)
        try:
            result = await self.upstream.post_json(url, body, self.config.prewarm.timeout_s)
        finally:
            self.fleet.end(replica)
        return result.status, result.body
