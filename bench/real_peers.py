"""pcache against sglang-router in front of the same two REAL vLLM engines, judged by the engines.

    python bench/real_peers.py                  # both routers, two runs each (order alternating)
    python bench/real_peers.py --rounds 1
    python bench/real_peers.py --sessions 24 --turns 8 --concurrency 6

Two real vLLM engines (CPU build, the real-engine suite's tiny local model, 48 KV blocks of 128
tokens each so the fleet cannot hold the whole workload) serve every run. Each run starts from
empty prefix caches (``/reset_prefix_cache``, a dev-mode endpoint), starts one router in front of
both engines -- pcache (``tiered``, the default config; then with the engines' KV events and the
model's tokenizer, the precise index) or sglang-router 0.3 (``cache_aware``) --
and replays the same multi-session chat workload through it: sessions of a few apps sharing their
system prompt (Zipf popularity), several turns each, with their history resent every turn, a fixed
number in flight. Reported per run: the engine-reported prefix-cache hit rate (token-weighted
``vllm:prefix_cache_hits_total`` / ``queries_total`` increases over the run, both engines; then the
same from the responses' ``usage``, split into sessions' first turns and later turns), client
TTFT p50/p95 of streamed responses, errors, and how the requests split over the engines (their
own finished-request counters).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engines_real.engine import MODEL_NAME, VllmEngine  # noqa: E402
from tests.engines_real.traffic import prose  # noqa: E402
from tests.harness.ports import free_port  # noqa: E402
from tests.harness.router import RouterProcess  # noqa: E402

HERE = ROOT / "tests" / "engines_real"
CACHE = Path.home() / ".cache" / "pcache"


@dataclass
class Turn:
    session: str
    system: str
    turn: int


@dataclass
class Result:
    router: str
    requests: int
    errors: int
    hit_rate: float
    first_turn_hit: float  # cached / prompt tokens of sessions' first turns (usage in responses)
    later_turn_hit: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    split: str
    wall_s: float


def _ratio(tally: list[int]) -> float:
    return tally[1] / tally[0] if tally[0] else float("nan")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plan(sessions: int, turns: int, apps: int, seed: int) -> list[list[Turn]]:
    """Each session's turns; session i uses app ``k`` with Zipf(1) popularity."""
    rng = random.Random(seed)
    systems = [prose(f"peer-app-{k}", 2000) for k in range(apps)]
    weights = [1 / (k + 1) for k in range(apps)]
    chosen = rng.choices(range(apps), weights=weights, k=sessions)
    return [[Turn(f"peer-s{i}", systems[app], t) for t in range(turns)] for i, app in enumerate(chosen)]


class Client:
    """Replays sessions through one router: a session's turns in order, ``concurrency`` in flight."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.concurrency = concurrency
        self.ttfts: list[float] = []
        self.errors: list[str] = []
        # [prompt tokens, cached tokens] the engines reported, sessions' first turns and the rest.
        self.first_turns = [0, 0]
        self.later_turns = [0, 0]
        self._lock = threading.Lock()

    def _send(self, messages: list[dict[str, str]], session: str, turn: int) -> str:
        payload = {
            "model": MODEL_NAME,
            "messages": messages,
            "max_tokens": 16,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        usage: dict[str, Any] = {}
        first: float | None = None
        text: list[str] = []
        with httpx.stream(
            "POST",
            f"{self.url}/v1/chat/completions",
            json=payload,
            headers={"x-session-id": session},
            timeout=300,
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:200]!r}")
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    if first is None:
                        first = time.perf_counter() - started
                    if '"error"' in line:
                        raise RuntimeError(f"error event: {line[:200]}")
                    text.append(line)
                    usage = json.loads(line.removeprefix("data: ")).get("usage") or usage
        details = usage.get("prompt_tokens_details") or {}
        with self._lock:
            self.ttfts.append(first if first is not None else time.perf_counter() - started)
            tally = self.first_turns if turn == 0 else self.later_turns
            tally[0] += int(usage.get("prompt_tokens", 0))
            tally[1] += int(details.get("cached_tokens") or 0)
        return f"answer {len(text)}"

    def run(self, sessions: list[list[Turn]]) -> None:
        pending = list(reversed(sessions))

        def worker() -> None:
            while True:
                with self._lock:
                    if not pending:
                        return
                    session = pending.pop()
                messages = [{"role": "system", "content": session[0].system}]
                for turn in session:
                    messages.append({"role": "user", "content": prose(f"{turn.session}-{turn.turn}", 300)})
                    try:
                        answer = self._send(messages, turn.session, turn.turn)
                    except (httpx.HTTPError, RuntimeError) as exc:
                        with self._lock:
                            self.errors.append(str(exc))
                        break
                    messages.append({"role": "assistant", "content": answer})

        threads = [threading.Thread(target=worker) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


class SglangRouter:
    """``python -m sglang_router.launch_router --policy cache_aware`` in front of the engines."""

    def __init__(self, workers: list[str]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            "127.0.0.1",
            "--port",
            self.url.rsplit(":", 1)[1],
            "--worker-urls",
            *workers,
            "--policy",
            "cache_aware",
            "--log-level",
            "warn",
            "--prometheus-port",
            str(free_port()),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        probe = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                detail = self.process.stderr.read()[-2000:] if self.process.stderr else ""
                raise RuntimeError(f"sglang-router exited with {self.process.returncode}: {detail}")
            try:
                if httpx.post(f"{self.url}/v1/chat/completions", json=probe, timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("sglang-router did not answer a chat completion within 120 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stderr:
            self.process.stderr.close()


def _prepare() -> tuple[str, Path]:
    python = subprocess.run(
        ["bash", str(HERE / "install_vllm.sh")], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    model = subprocess.run(
        [python, str(HERE / "build_tiny_model.py"), str(CACHE / "models")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    return python, Path(model)


def _fleet_counters(engines: list[VllmEngine]) -> tuple[float, float, dict[str, float]]:
    """Prefix-cache queries and hits (tokens, both engines) and requests finished per engine."""
    readings = {e.name: e.metrics() for e in engines}
    queries = sum(m.get("vllm:prefix_cache_queries_total", 0.0) for m in readings.values())
    hits = sum(m.get("vllm:prefix_cache_hits_total", 0.0) for m in readings.values())
    finished = {name: m.get("vllm:request_success_total", 0.0) for name, m in readings.items()}
    return queries, hits, finished


def measure(
    name: str,
    start_router: Callable[[], tuple[str, Callable[[], None]]],
    engines: list[VllmEngine],
    sessions: list[list[Turn]],
    concurrency: int,
) -> Result:
    for engine in engines:
        engine.reset_prefix_cache()
    url, stop = start_router()
    try:
        queries0, hits0, finished0 = _fleet_counters(engines)
        client = Client(url, concurrency)
        started = time.monotonic()
        client.run(sessions)
        wall = time.monotonic() - started
        queries1, hits1, finished1 = _fleet_counters(engines)
    finally:
        stop()
    split = ", ".join(f"{name} {finished1[name] - finished0[name]:.0f}" for name in sorted(finished1))
    return Result(
        router=name,
        requests=len(client.ttfts),
        errors=len(client.errors),
        hit_rate=(hits1 - hits0) / (queries1 - queries0) if queries1 > queries0 else float("nan"),
        first_turn_hit=_ratio(client.first_turns),
        later_turn_hit=_ratio(client.later_turns),
        ttft_p50_ms=_percentile(client.ttfts, 0.5) * 1000,
        ttft_p95_ms=_percentile(client.ttfts, 0.95) * 1000,
        split=split,
        wall_s=wall,
    )


def _table(results: list[Result]) -> str:
    header = (
        f"{'router':<28} {'reqs':>5} {'err':>4} {'hit rate':>9} {'turn 1':>7} {'later':>7} "
        f"{'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'wall s':>7}  split"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.router:<28} {r.requests:>5} {r.errors:>4} {r.hit_rate:>9.1%} {r.first_turn_hit:>7.1%} "
            f"{r.later_turn_hit:>7.1%} {r.ttft_p50_ms:>7.0f}ms "
            f"{r.ttft_p95_ms:>7.0f}ms {r.wall_s:>7.1f}  {r.split}"
        )
    return "\n".join(lines)


def _summary(results: list[Result]) -> str:
    """Each router's mean over its runs, and pcache's ratio to sglang-router."""
    means: dict[str, tuple[float, float, float]] = {}
    for name in dict.fromkeys(r.router for r in results):
        runs = [r for r in results if r.router == name]
        means[name] = (
            sum(r.hit_rate for r in runs) / len(runs),
            sum(r.ttft_p50_ms for r in runs) / len(runs),
            sum(r.ttft_p95_ms for r in runs) / len(runs),
        )
    lines = [
        f"mean of {name}: hit rate {hit:.1%}, TTFT p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        for name, (hit, p50, p95) in means.items()
    ]
    peer = means.get("sglang-router (cache_aware)")
    for name, ours in means.items():
        if peer and name.startswith("pcache"):
            lines.append(
                f"{name} / sglang-router: hit rate {ours[0] / peer[0]:.3f}x, "
                f"TTFT p50 {ours[1] / peer[1]:.2f}x, p95 {ours[2] / peer[2]:.2f}x"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Defaults sized against the engines' caches (2 x 48 blocks x 128 tokens): eight ~800-token system
    # prompts and eight growing histories in flight do not fit one engine, and barely fit both.
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--apps", type=int, default=8, help="distinct shared system prompts")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions in flight")
    parser.add_argument("--rounds", type=int, default=2, help="runs per router, order alternating")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    python, model = _prepare()
    work = Path(tempfile.mkdtemp(prefix="pcache-real-peers-"))
    engines = [
        VllmEngine(
            f"e{n + 1}",
            python=python,
            model_dir=model,
            work_dir=work,
            core=n,
            cache_root=CACHE / "vllm-cache-root",
        )
        for n in range(2)
    ]
    sessions = plan(args.sessions, args.turns, args.apps, args.seed)

    def pcache_with(**options: Any) -> Callable[[], tuple[str, Callable[[], None]]]:
        def start() -> tuple[str, Callable[[], None]]:
            router = RouterProcess(
                replicas={e.name: e.url for e in engines},
                state_dir=Path(tempfile.mkdtemp(prefix="router-", dir=work)),
                startup_timeout_s=120,
                **options,
            ).start()

            def stop() -> None:
                router.stop()

            return router.url, stop

        return start

    # The precise index: the engines' KV events and the model's own tokenizer (issue 14).
    precise = pcache_with(
        replica_options={
            e.name: {
                "kv_events": {
                    "endpoint": e.kv_events.endpoint,
                    "replay_endpoint": e.kv_events.replay_endpoint,
                    "topic": e.kv_events.topic,
                }
            }
            for e in engines
        },
        tokenizers={MODEL_NAME: str(model)},
    )

    def sglang() -> tuple[str, Callable[[], None]]:
        router = SglangRouter([e.url for e in engines])
        return router.url, router.stop

    targets = [
        ("pcache (tiered)", pcache_with()),
        ("pcache (tiered, KV events)", precise),
        ("sglang-router (cache_aware)", sglang),
    ]
    results: list[Result] = []
    try:
        for engine in engines:
            engine.start()
        for engine in engines:
            engine.wait_ready()
        for round_ in range(args.rounds):
            for name, start in targets if round_ % 2 == 0 else list(reversed(targets)):
                print(f"run {round_ + 1}: {name} ...", file=sys.stderr, flush=True)
                results.append(measure(name, start, engines, sessions, args.concurrency))
    finally:
        for engine in engines:
            engine.stop()
    print(
        f"{args.sessions} sessions x {args.turns} turns, {args.apps} apps (Zipf), "
        f"{args.concurrency} in flight, 2 vLLM {engines[0].num_gpu_blocks}-block engines, "
        "caches reset before each run"
    )
    print(_table(results))
    print(_summary(results))


if __name__ == "__main__":
    main()
