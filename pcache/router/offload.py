"""CPU-heavy work kept off the data plane's event loop: large request bodies and replica metrics.

Parsing JSON holds the GIL for the whole call (orjson's ``loads`` of a 16 MiB body of tiny content
parts took 0.4-1 s on the 2-core CI machine), so a thread does not help: the event loop would stall
for as long. Bodies above ``threshold_bytes`` are parsed and fingerprinted in one separate worker
process instead (spawned at the first such body, replaced every ``_TASKS_PER_WORKER`` jobs so a hostile body's
memory does not stay), and only the small :class:`~pcache.fingerprint.Fingerprint` comes back.
Smaller bodies stay on the loop, where they cost microseconds. :class:`LoopLag` measures what the
loop suffers anyway, as ``pcache_event_loop_lag_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson

from pcache.fingerprint import Fingerprint
from pcache.prompt import FingerprintConfig, PromptError, Tier1Index, fingerprint_request

__all__ = ["BodyError", "LoopLag", "ParsedBody", "RequestParser", "parse_and_fingerprint"]

log = logging.getLogger("pcache.router.offload")

_TASKS_PER_WORKER = 64


class BodyError(ValueError):
    """A request body the router refuses (400), with the OpenAI error ``code`` to send."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


ParsedBody = tuple[Fingerprint, dict[str, Any] | None, bool]
"""(fingerprint, the payload when parsed in this process, whether the client asked for a stream)."""


def parse_and_fingerprint(
    body: bytes,
    headers: Mapping[str, str],
    config: FingerprintConfig,
    index: Tier1Index | None,
) -> tuple[Fingerprint, dict[str, Any], bool]:
    """Parse a completion body and fingerprint it; raises :class:`BodyError` for a bad one."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BodyError("request body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise BodyError("request body must be a JSON object")
    try:
        fingerprint = fingerprint_request(payload, headers, config, index)
    except PromptError as exc:
        raise BodyError(str(exc), "invalid_prompt") from None
    return fingerprint, payload, payload.get("stream") is True


def _in_worker(
    body: bytes, headers: dict[str, str], config: FingerprintConfig, index: Tier1Index | None
) -> tuple[Fingerprint, bool] | tuple[str, str | None]:
    """The worker's job: the fingerprint and stream flag, or (error message, code)."""
    try:
        fingerprint, _, stream = parse_and_fingerprint(body, headers, config, index)
    except BodyError as exc:
        return str(exc), exc.code
    return fingerprint, stream


class RequestParser:
    """Parses and fingerprints completion bodies, large ones in a worker process."""

    def __init__(self, *, threshold_bytes: int) -> None:
        self.threshold_bytes = threshold_bytes
        self._pool: ProcessPoolExecutor | None = None

    def _worker(self) -> ProcessPoolExecutor:
        """The worker process, spawned at the first large body (most routers never see one)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=_TASKS_PER_WORKER,
            )
        return self._pool

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def parse(
        self,
        body: bytes,
        headers: Mapping[str, str],
        config: FingerprintConfig,
        index: Tier1Index | None,
    ) -> ParsedBody:
        """Raises :class:`BodyError` for a body the router refuses."""
        if len(body) < self.threshold_bytes:
            return parse_and_fingerprint(body, headers, config, index)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._worker(), _in_worker, body, dict(headers), config, index
            )
        except (BrokenProcessPool, pickle.PicklingError, AttributeError, TypeError) as exc:
            # A config the worker cannot receive (a tokenizer closure) or a worker that died:
            # fall back to this process rather than fail the request.
            log.warning("fingerprint worker unavailable (%s); parsing on the event loop", exc)
            if isinstance(exc, BrokenProcessPool):
                self.stop()  # the next large body spawns a new worker
            return parse_and_fingerprint(body, headers, config, index)
        if isinstance(result[0], str):
            raise BodyError(result[0], result[1] if isinstance(result[1], str) else None)
        fingerprint, stream = result
        assert isinstance(fingerprint, Fingerprint)
        return fingerprint, None, bool(stream)


class LoopLag:
    """How the event loop keeps up, sampled by a timer every ``interval_s`` over ``window_s``.

    ``worst_lag`` is the largest lateness of the timer (what clients feel: it includes time the
    process waited for a CPU on a busy machine). ``worst_stall`` is the largest CPU time the loop's
    own thread used between two ticks: what the router itself did on the loop, which a busy
    machine does not inflate, so a 0.4 s JSON parse shows as 0.4 s whatever the load.
    """

    def __init__(self, *, interval_s: float = 0.05, window_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[tuple[float, float, float]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            before, cpu_before = time.perf_counter(), time.thread_time()
            await asyncio.sleep(self.interval_s)
            now = time.perf_counter()
            lag = max(0.0, now - before - self.interval_s)
            self._samples.append((now, lag, time.thread_time() - cpu_before))
            horizon = now - self.window_s
            while self._samples and self._samples[0][0] < horizon:
                self._samples.popleft()

    def worst_lag(self) -> float:
        """The largest timer lateness in the window, in seconds (0 before the first sample)."""
        return max((lag for _, lag, _ in self._samples), default=0.0)

    def worst_stall(self) -> float:
        """The largest loop-thread CPU time between two ticks in the window, in seconds."""
        return max((cpu for _, _, cpu in self._samples), default=0.0)
