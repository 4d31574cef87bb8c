"""Plan and run prewarms: send each prefix to its replicas so their caches hold it before traffic.

A prewarm request has the shape real traffic will have (the prefix as a chat system message, or as
completion text) with ``max_tokens: 1``, so the engine prefills and caches the prefix and does
almost nothing else. :class:`PrewarmJobs` runs jobs in the background with bounded concurrency and
keeps per-(prefix, replica) results; with ``verify``, a second identical probe must report cached
tokens in its usage. A prewarm into a KV pool the replicas share is sent to one replica and probed on
another (``probe_on``): the probe must report cached tokens and its engine must count them as
external hits (loaded, not held on its GPU). Prompt texts are never logged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pcache.api import PrewarmJob, PrewarmPair, PrewarmPlanEntry

__all__ = ["ExternalHits", "PrewarmJobs", "PrewarmTarget", "prewarm_body"]

log = logging.getLogger("pcache.prewarm")

As = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class PrewarmTarget:
    """One prefix and the replicas it must be warm on (``why`` explains the choice)."""

    prefix: str
    text: str
    as_: As
    replicas: tuple[str, ...]
    why: str
    probe_on: str | None = None  # verify on this replica instead (a shared pool's prewarm)


def prewarm_body(text: str, as_: As, model: str | None) -> tuple[str, dict[str, Any]]:
    """The endpoint path and request body that warm ``text`` the way real requests will use it."""
    body: dict[str, Any] = {"max_tokens": 1, "temperature": 0, "stream": False}
    if model is not None:
        body["model"] = model
    if as_ == "chat":
        body["messages"] = [{"role": "system", "content": text}]
        return "/v1/chat/completions", body
    body["prompt"] = text
    return "/v1/completions", body


# (replica, path, body) -> (HTTP status, response body); raises on transport failure
SendPrewarm = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, bytes]]]
# replica -> its engine's cumulative external (not GPU) cache-hit tokens, None if unknown
ExternalHits = Callable[[str], Awaitable[float | None]]


def _cached_tokens(content: bytes) -> int | None:
    try:
        usage = json.loads(content).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None


def _error_message(status: int, content: bytes) -> str:
    try:
        error = json.loads(content).get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"HTTP {status}: {error['message']}"[:300]
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status}"


class PrewarmJobs:
    """Background prewarm jobs with per-(prefix, replica) results, newest kept (bounded history)."""

    def __init__(
        self,
        send: SendPrewarm,
        model_of: Callable[[str], Awaitable[str | None]],
        history: int = 100,
        external_hits: ExternalHits | None = None,
    ):
        self._send = send
        self._external_hits = external_hits
        # one pool probe at a time per replica, so its counters' growth is that probe's own
        self._probe_locks: dict[str, asyncio.Lock] = {}
        self._model_of = model_of
        self._history = history
        self._jobs: OrderedDict[str, PrewarmJob] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)

    def get(self, job_id: str) -> PrewarmJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[PrewarmJob]:
        return list(self._jobs.values())

    def _new_id(self) -> str:
        return f"pw-{int(time.time())}-{next(self._ids)}"

    def plan(self, targets: Sequence[PrewarmTarget]) -> PrewarmJob:
        """A job in state ``planned`` (what ``dry_run`` returns); not stored."""
        return self._job(self._new_id(), targets, "planned")

    @staticmethod
    def _job(
        job_id: str, targets: Sequence[PrewarmTarget], state: Literal["planned", "running"]
    ) -> PrewarmJob:
        plan = [PrewarmPlanEntry(prefix=t.prefix, replicas=list(t.replicas), why=t.why) for t in targets]
        results = [PrewarmPair(prefix=t.prefix, replica=r) for t in targets for r in t.replicas]
        return PrewarmJob(
            id=job_id,
            state=state,
            total=len(results),
            done=0,
            failed=0,
            created_at=time.time(),
            plan=plan,
            results=results,
        )

    def start(self, targets: Sequence[PrewarmTarget], *, concurrency: int, verify: bool) -> PrewarmJob:
        """Start a job in the background and return it (state ``running``, or ``done`` if empty)."""
        job = self._job(self._new_id(), targets, "running")
        self._jobs[job.id] = job
        while len(self._jobs) > self._history:
            old, _ = self._jobs.popitem(last=False)
            self._tasks.pop(old, None)
        task = asyncio.create_task(self._run(job, targets, concurrency, verify), name=f"prewarm {job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))
        return job

    async def wait(self, job_id: str, timeout_s: float) -> PrewarmJob | None:
        """Wait for a job to finish (at most ``timeout_s``); returns its latest state."""
        task = self._tasks.get(job_id)
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                log.warning("prewarm job %s still running after %.1fs", job_id, timeout_s)
        return self._jobs.get(job_id)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self, job: PrewarmJob, targets: Sequence[PrewarmTarget], concurrency: int, verify: bool
    ) -> None:
        semaphore = asyncio.Semaphore(concurrency)
        texts = {t.prefix: (t.text, t.as_, t.probe_on) for t in targets}

        async def one(index: int, pair: PrewarmPair) -> None:
            text, as_, probe_on = texts[pair.prefix]
            async with semaphore:
                if probe_on is not None and verify:
                    result = await self._warm_pool(pair, text, as_, probe_on)
                else:
                    result = await self._warm(pair, text, as_, verify)
            job.results[index] = result
            job.done += 1
            if result.ok is False:
                job.failed += 1

        await asyncio.gather(*(one(i, pair) for i, pair in enumerate(list(job.results))))
        job.state = "failed" if job.total and job.failed == job.total else "done"
        job.finished_at = time.time()
        log.info("prewarm job %s: %d pairs, %d failed", job.id, job.total, job.failed)

    async def _warm_pool(self, pair: PrewarmPair, text: str, as_: As, probe_on: str) -> PrewarmPair:
        """Warm through ``pair.replica`` (its engine writes the KV through to the pool), then probe
        ``probe_on``: verified when the probe reports cached tokens that its engine's external-hit
        counter grew by (they came from the pool, not its GPU)."""
        warmed = await self._warm(pair, text, as_, verify=False)
        if not warmed.ok:
            return warmed
        started = time.perf_counter()
        try:
            async with self._probe_locks.setdefault(probe_on, asyncio.Lock()):
                before = await self._external(probe_on)
                model = await self._model_of(probe_on)
                path, body = prewarm_body(text, as_, model)
                status, content = await self._send(probe_on, path, body)
                probe = _cached_tokens(content) if status == 200 else None
                after = await self._external(probe_on)
        except Exception as exc:  # the probe's replica vanished or failed: the warm is not verified
            return warmed.model_copy(update={"verified": False, "verified_on": probe_on, "error": str(exc)})
        external = None if before is None or after is None else max(0, round(after - before))
        return warmed.model_copy(
            update={
                "verified": bool(probe) and bool(external),
                "verified_on": probe_on,
                "cached_tokens": probe,
                "external_hit_tokens": external,
                "duration_s": (warmed.duration_s or 0.0) + time.perf_counter() - started,
            }
        )

    async def _external(self, replica: str) -> float | None:
        return None if self._external_hits is None else await self._external_hits(replica)

    async def _warm(self, pair: PrewarmPair, text: str, as_: As, verify: bool) -> PrewarmPair:
        started = time.perf_counter()
        try:
            model = await self._model_of(pair.replica)
            path, body = prewarm_body(text, as_, model)
            status, content = await self._send(pair.replica, path, body)
            if status != 200:
                return pair.model_copy(
                    update={
                        "ok": False,
                        "error": _error_message(status, content),
                        "duration_s": time.perf_counter() - started,
                    }
                )
            cached = _cached_tokens(content)
            verified: bool | None = None
            if verify:
                status, content = await self._send(pair.replica, path, body)
                probe = _cached_tokens(content) if status == 200 else None
                verified = bool(probe)
                cached = probe
            return pair.model_copy(
                update={
                    "ok": True,
                    "cached_tokens": cached,
                    "verified": verified,
                    "duration_s": time.perf_counter() - started,
                }
            )
        except Exception as exc:  # a transport error or a vanished replica: one failed pair
            return pair.model_copy(
                update={
                    "ok": False,
                    "error": str(exc) or type(exc).__name__,
                    "duration_s": time.perf_counter() - started,
                }
            )
