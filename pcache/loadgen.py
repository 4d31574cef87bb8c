"""Traffic generator: concurrent multi-turn chat sessions against any OpenAI-compatible endpoint.

Sessions come from :mod:`pcache.workload` (seeded, so a run is repeatable); each turn streams a
chat completion with the session id in the ``x-session-id`` header, measures client-side TTFT and
latency, reads ``usage.prompt_tokens_details.cached_tokens``, then appends the reply and the next
user message. A run ends at ``max_requests`` or ``duration_s`` (or when ``stop`` is set): no new
request starts, in-flight ones get ``grace_s`` to finish, and :class:`LoadSummary` tells the story.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from pcache.workload import SessionPlan, Workload, plan_session

__all__ = ["LoadGenerator", "LoadLimits", "LoadSummary", "TurnResult", "percentile"]


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """When a run stops starting requests: after ``max_requests``, after ``duration_s``, or both."""

    max_requests: int | None = None
    duration_s: float | None = None
    grace_s: float = 10.0
    max_sessions: int = 256  # concurrent sessions; arrivals wait beyond this

    def __post_init__(self) -> None:
        if self.max_requests is None and self.duration_s is None:
            raise ValueError("give max_requests, duration_s or both, so the run ends")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")


@dataclass(frozen=True, slots=True)
class TurnResult:
    """One request as the client saw it."""

    session_id: str
    ok: bool
    error: str | None  # kind: http_503, timeout, connect, stream, bad_response, empty, cancelled
    ttft_s: float | None
    latency_s: float
    prompt_tokens: int | None
    cached_tokens: int | None
    replica: str | None  # from the router's x-pcache-replica header, when present


CUT_OFF = "cancelled"  # the run ended (limit reached, grace period over) with the request in flight


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank ``q``-quantile (0..1) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What a run did, from the client's side."""

    requests: int
    ok: int
    errors: dict[str, int]
    sessions: int
    elapsed_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    prompt_tokens: int
    cached_tokens: int
    by_replica: dict[str, int] = field(default_factory=dict)
    cut_off: int = 0  # still in flight when the run ended (after the grace period): not errors

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cached_ratio(self) -> float | None:
        """Cached prompt tokens / prompt tokens, as the endpoint reported them in ``usage``."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    @classmethod
    def of(cls, results: list[TurnResult], sessions: int, elapsed_s: float) -> LoadSummary:
        ok = [r for r in results if r.ok]
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        latencies = [r.latency_s for r in ok]
        errors = Counter(r.error for r in results if not r.ok and r.error and r.error != CUT_OFF)
        replicas = Counter(r.replica for r in results if r.replica)
        with_usage = [r for r in ok if r.prompt_tokens is not None]
        return cls(
            requests=len(results),
            ok=len(ok),
            errors=dict(sorted(errors.items())),
            sessions=sessions,
            elapsed_s=elapsed_s,
            ttft_p50_s=percentile(ttfts, 0.50),
            ttft_p95_s=percentile(ttfts, 0.95),
            latency_p50_s=percentile(latencies, 0.50),
            latency_p95_s=percentile(latencies, 0.95),
            prompt_tokens=sum(r.prompt_tokens or 0 for r in with_usage),
            cached_tokens=sum(r.cached_tokens or 0 for r in with_usage),
            by_replica=dict(sorted(replicas.items())),
            cut_off=sum(1 for r in results if r.error == CUT_OFF),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "sessions": self.sessions,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requests_per_s, 2),
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p95_s": self.ttft_p95_s,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "cached_ratio": self.cached_ratio,
            "by_replica": self.by_replica,
            "cut_off": self.cut_off,
        }


class _Budget:
    """Shared stop conditions: request count, deadline, external stop."""

    def __init__(self, limits: LoadLimits, stop: asyncio.Event) -> None:
        self.limits = limits
        self.stop = stop
        self.started = 0
        self.deadline = time.monotonic() + limits.duration_s if limits.duration_s is not None else math.inf

    def exhausted(self) -> bool:
        if self.stop.is_set() or time.monotonic() >= self.deadline:
            return True
        return self.limits.max_requests is not None and self.started >= self.limits.max_requests

    def take(self) -> bool:
        """Claim one request slot; False once the run is over."""
        if self.exhausted():
            return False
        self.started += 1
        return True

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the run ends first; True when the run is still on afterwards."""
        remaining = min(seconds, self.deadline - time.monotonic())
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), remaining)
        return not self.exhausted()


class LoadGenerator:
    """Drives ``workload`` against ``base_url`` (an OpenAI-compatible server or the pcache router).

    ``transport`` is injectable like every pcache client; ``model`` defaults to the first model that
    ``GET /v1/models`` lists.
    """

    def __init__(
        self,
        base_url: str,
        workload: Workload,
        limits: LoadLimits,
        *,
        model: str | None = None,
        api_key: str | None = None,
        session_header: str = "x-session-id",
        request_timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.workload = workload
        self.limits = limits
        self.model = model
        self.session_header = session_header
        self.results: list[TurnResult] = []
        self.sessions_started = 0
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        pool = httpx.Limits(
            max_connections=limits.max_sessions, max_keepalive_connections=limits.max_sessions
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            limits=pool,
            timeout=httpx.Timeout(request_timeout_s, connect=5.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _discover_model(self) -> str:
        try:
            response = await self._http.get("/v1/models")
            response.raise_for_status()
            return str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"cannot read a model name from {self.base_url}/v1/models: {exc}") from exc

    async def run(self, stop: asyncio.Event | None = None) -> LoadSummary:
        """Run until a limit is reached or ``stop`` is set; returns the summary."""
        stop = stop or asyncio.Event()
        if self.model is None:
            self.model = await self._discover_model()
        budget = _Budget(self.limits, stop)
        arrivals = random.Random(f"{self.workload.seed}:arrivals")
        slots = asyncio.Semaphore(self.limits.max_sessions)
        sessions: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        index = 0
        try:
            while not budget.exhausted():
                await slots.acquire()
                if budget.exhausted():
                    slots.release()
                    break
                plan = plan_session(self.workload, index)
                index += 1
                task = asyncio.create_task(self._session(plan, budget))
                task.add_done_callback(lambda _: slots.release())
                sessions.add(task)
                task.add_done_callback(sessions.discard)
                self.sessions_started += 1
                if not await budget.sleep(arrivals.expovariate(self.workload.session_rate)):
                    break
            if sessions:
                _, pending = await asyncio.wait(set(sessions), timeout=self.limits.grace_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)
        return LoadSummary.of(self.results, self.sessions_started, time.monotonic() - started)

    async def _session(self, plan: SessionPlan, budget: _Budget) -> None:
        messages: list[dict[str, str]] = [{"role": "system", "content": plan.prompt.text}]
        for turn, user_message in enumerate(plan.user_messages):
            if turn and not await budget.sleep(plan.think_times_s[turn - 1]):
                return
            if not budget.take():
                return
            messages.append({"role": "user", "content": user_message})
            result, reply = await self._turn(plan.session_id, messages)
            self.results.append(result)
            if not result.ok:
                return  # a real user would give up or start over; either way this conversation ends
            messages.append({"role": "assistant", "content": reply})

    async def _turn(self, session_id: str, messages: list[dict[str, str]]) -> tuple[TurnResult, str]:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.workload.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sent = time.perf_counter()
        ttft: float | None = None
        usage: dict[str, Any] | None = None
        replica: str | None = None
        parts: list[str] = []

        def failed(kind: str) -> tuple[TurnResult, str]:
            latency = time.perf_counter() - sent
            return TurnResult(session_id, False, kind, None, latency, None, None, replica), ""

        try:
            async with self._http.stream(
                "POST", "/v1/chat/completions", json=body, headers={self.session_header: session_id}
            ) as response:
                replica = response.headers.get("x-pcache-replica")
                if response.status_code >= 400:
                    await response.aread()
                    return failed(f"http_{response.status_code}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            if ttft is None:
                                ttft = time.perf_counter() - sent
                            parts.append(content)
        except httpx.TimeoutException:
            return failed("timeout")
        except httpx.ConnectError:
            return failed("connect")
        except (httpx.TransportError, httpx.StreamError):
            return failed("stream")
        except (ValueError, AttributeError, TypeError):
            return failed("bad_response")
        except asyncio.CancelledError:
            self.results.append(failed(CUT_OFF)[0])
            raise
        if not parts:
            return failed("empty")
        prompt_tokens = cached = None
        if usage is not None:
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            cached = int(details.get("cached_tokens") or 0)
        latency = time.perf_counter() - sent
        result = TurnResult(session_id, True, None, ttft, latency, prompt_tokens, cached, replica)
        return result, "".join(parts)
