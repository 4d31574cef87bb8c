"""How long one refresh of ``pcache top`` takes: poll result in hand to painted screen.

64 replicas and 200 prefixes (the heat map is 200 x 64 cells), values changing on every frame, in a
headless Textual app at 200x60. "apply" is updating every widget in place; "to painted" runs until
the screen's next compositor pass (layout + render of the dirty regions, written to the headless
driver) has finished, including the wait for Textual's update timer. Bar: under 50 ms.

    .venv/bin/python bench/console_refresh.py [--frames 40] [--replicas 64] [--prefixes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.table import Table
from textual.screen import Screen

from pcache.client import AdminClient
from pcache.testing.fake_admin import FROZEN_NOW, fake_frame_parts
from pcache_console.app import TopApp
from pcache_console.source import Frame, RouterSource


def _churn_frames(count: int, replicas: int, prefixes: int) -> Iterator[Frame]:
    """Worst case: every value of every replica and every heat-map cell is new on each frame.

    Frames are made one at a time (untimed), so only the live ones are in memory, as in the app."""
    for i in range(count):
        status, heat, drift = fake_frame_parts(replicas, prefixes, seed=i, now=FROZEN_NOW + i)
        yield Frame(status=status, heat=heat, drift=drift, fetched_at=FROZEN_NOW + i)


def _steady_frames(count: int, replicas: int, prefixes: int) -> Iterator[Frame]:
    """A steady fleet: every replica's numbers move a little, one prefix row in ten changes."""
    status, heat, drift = fake_frame_parts(replicas, prefixes, seed=0, now=FROZEN_NOW)
    for i in range(count):
        rng = random.Random(i)
        rows = [
            r.model_copy(
                update={
                    "kv_usage": None if r.kv_usage is None else min(1.0, r.kv_usage * rng.uniform(0.9, 1.1)),
                    "running": rng.randint(0, 16),
                    "requests_per_s": round(rng.uniform(0.5, 9.0), 1),
                }
            )
            for r in status.replicas
        ]
        moved = set(rng.sample(range(len(heat.prefixes)), k=max(1, len(heat.prefixes) // 10)))
        prefix_rows = [
            p.model_copy(
                update={
                    "by_replica": {
                        n: c.model_copy(update={"share": rng.random()}) for n, c in p.by_replica.items()
                    }
                }
            )
            if index in moved
            else p
            for index, p in enumerate(heat.prefixes)
        ]
        yield Frame(
            status=status.model_copy(update={"replicas": rows}),
            heat=heat.model_copy(update={"prefixes": prefix_rows}),
            drift=drift,
            fetched_at=FROZEN_NOW + i,
        )


def _watch_paints(screen: Screen[object]) -> asyncio.Event:
    """An event set whenever ``screen`` finishes a compositor pass (Textual internals: bench only)."""
    painted = asyncio.Event()
    for name in ("_compositor_refresh", "_refresh_layout"):
        original = getattr(screen, name)

        def wrapper(*args: object, _original: Callable[..., None] = original, **kwargs: object) -> None:
            _original(*args, **kwargs)
            painted.set()

        setattr(screen, name, wrapper)
    return painted


async def _paint(app: TopApp, painted: asyncio.Event, frame: Frame) -> tuple[float, float, float, float]:
    """(apply wall, to-painted wall, apply CPU, to-painted CPU) for one frame, in seconds."""
    painted.clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    app.apply(frame)
    applied, cpu_applied = time.perf_counter(), time.process_time()
    await asyncio.wait_for(painted.wait(), timeout=10)
    done, cpu_done = time.perf_counter(), time.process_time()
    return applied - start, done - start, cpu_applied - cpu_start, cpu_done - cpu_start


async def _run(frames: Iterator[Frame], size: tuple[int, int]) -> tuple[float, dict[str, list[float]]]:
    # The source is never polled (paused): the bench hands frames straight to apply().
    client = AdminClient("http://127.0.0.1:9", timeout=0.1)
    app = TopApp(RouterSource(client), refresh_s=60.0, freeze_gc=True)  # as `pcache top` runs it
    app.paused = True
    series: dict[str, list[float]] = {
        "apply (widgets updated), wall": [],
        "refresh (to painted), wall": [],
        "apply, CPU time": [],
        "refresh (to painted), CPU time": [],
    }
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        paints = _watch_paints(app.screen)
        _, first, _, _ = await _paint(app, paints, next(frames))
        await pilot.pause()
        for frame in frames:
            for values, measured in zip(series.values(), await _paint(app, paints, frame), strict=True):
                values.append(measured)
            await pilot.pause()  # let any follow-up work settle before the next frame
    return first, series


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--prefixes", type=int, default=200)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--height", type=int, default=60)
    args = parser.parse_args()
    size = (args.width, args.height)
    table = Table(
        title=f"pcache top refresh: {args.replicas} replicas x {args.prefixes} prefixes, {size[0]}x{size[1]}"
    )
    for column in ("scenario", "step", "frames", "p50 ms", "p95 ms", "max ms", "mean ms"):
        table.add_column(column, justify="left" if column in ("scenario", "step") else "right")
    verdicts = []
    for scenario, make in (("steady", _steady_frames), ("all values new", _churn_frames)):
        first, series = asyncio.run(_run(make(args.frames + 1, args.replicas, args.prefixes), size))
        table.add_row(scenario, "first fill (to painted)", "1", *[f"{first * 1000:.1f}"] * 4)
        for label, values in series.items():
            table.add_row(
                "",
                label,
                str(len(values)),
                _ms(values, 0.5),
                _ms(values, 0.95),
                f"{max(values) * 1000:.1f}",
                f"{statistics.fmean(values) * 1000:.1f}",
            )
        table.add_section()
        painted = series["refresh (to painted), wall"]
        verdicts.append(f"{scenario}: p50 {_ms(painted, 0.5)} ms, p95 {_ms(painted, 0.95)} ms wall")
    Console(width=150).print(table)
    print(
        "; ".join(verdicts) + f" (bar 50 ms; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
