"""`pcache demo` as a real subprocess: it runs, reports a hit rate, and leaves nothing behind.

Whatever ends the demo (its duration, Ctrl-C, a crashed child, or the demo itself being killed),
every process it started must be gone and every port it bound must be free again.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

PORT = re.compile(r"http://127\.0\.0\.1:(\d+)")


class Demo:
    """``pcache demo --no-tui`` with its stderr collected line by line and its process tree recorded."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pcache_cli.main", "demo", "--no-tui", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self.descendants: set[int] = set()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line)

    def wait_for(self, pattern: str, timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    self.descendants |= descendants(self.process.pid)
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stderr:\n{''.join(self.lines)}")

    def pid_of(self, what: str) -> int:
        match = re.search(rf"{what} pid (\d+)", self.wait_for(rf"{what} pid \d+"))
        assert match is not None
        return int(match.group(1))

    def ports(self) -> set[int]:
        return {int(port) for line in self.lines for port in PORT.findall(line)}

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(10)  # EOF once every holder of the pipes (children too) is gone
        self.close()
        return code, "".join(self.out)

    def close(self) -> None:
        """Kill the demo if a test failed half-way, and close the pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc's parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_nothing_left(demo: Demo, timeout: float = 15.0) -> None:
    assert demo.descendants, "the demo's process tree was never recorded"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in demo.descendants):
        time.sleep(0.1)
    assert not [pid for pid in demo.descendants if alive(pid)], demo.stderr
    ports = demo.ports()
    assert ports, demo.stderr
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # raises if anything still listens there


@pytest.fixture
def start_demo() -> Iterator[Callable[..., Demo]]:
    """Start ``pcache demo --no-tui ARGS`` and wait until its router is up; killed at teardown."""
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(*args)
        started.append(demo)
        demo.wait_for(r"router pid \d+")
        return demo

    yield start
    for demo in started:
        demo.close()


def test_demo_runs_for_its_duration_prints_a_hit_rate_and_cleans_up(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--duration", "6", "--every", "2")
    code, stdout = demo.finish()
    assert code == 0, demo.stderr
    assert re.search(r"fleet hit rate\s*│?\s*\d+(\.\d)?%", stdout), stdout
    assert "joins the fleet" in demo.stderr  # the scenario ran against the admin API
    assert "NAME" in demo.stderr  # status tables while it ran
    assert_nothing_left(demo)


def test_ctrl_c_stops_everything_cleanly(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--duration", "20")  # the spare joins at 15% of the duration
    demo.wait_for(r"joins the fleet")
    demo.process.send_signal(signal.SIGINT)
    code, stdout = demo.finish(timeout=30)
    assert code == 0, demo.stderr
    assert "hit rate" in stdout
    assert_nothing_left(demo)


def test_a_crashed_child_stops_the_rest(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--duration", "120")
    sim = demo.pid_of("simulator")
    assert sim in demo.descendants
    os.kill(sim, signal.SIGKILL)
    code, _ = demo.finish(timeout=30)
    assert code == 1
    assert "sim exited unexpectedly" in demo.stderr
    assert "Traceback" not in demo.stderr
    assert_nothing_left(demo)


def test_killing_the_demo_itself_leaves_no_orphans(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--duration", "120")
    demo.process.kill()  # SIGKILL: no cleanup code runs in the demo; the reaper must do it
    demo.finish(timeout=30)
    assert_nothing_left(demo)


def test_on_a_terminal_the_console_opens_and_q_stops_everything() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: pcache demo on a pseudo-terminal
        os.environ.update({"COLUMNS": "150", "LINES": "45", "NO_COLOR": "1"})
        try:
            os.execv(sys.executable, [sys.executable, "-m", "pcache_cli.main", "demo", "--duration", "20"])
        finally:
            os._exit(127)  # never run the rest of the test suite in the child
    screen = b""
    tree: set[int] = set()
    quit_sent = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the terminal closed: the demo exited
                    break
                if not data:
                    break
                screen += data
            if not quit_sent and b"pcache top" in screen and b"joins the fleet" in screen:
                tree = descendants(pid)  # the console is up and the scenario is running
                os.write(fd, b"q")
                quit_sent = True
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", screen).decode("utf-8", "replace")
    assert quit_sent, text[-2000:]
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "fleet hit rate" in text
    assert tree
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(child) for child in tree):
        time.sleep(0.1)
    assert not [child for child in tree if alive(child)]


def test_compare_reports_each_policy_from_the_replicas_counters_as_json() -> None:
    command = ["demo", "--compare", "--duration", "3", "--warmup", "1", "-o", "json"]
    result = subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", *command],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report) == ["round_robin", "tiered"]
    for policy, run in report.items():
        fleet = run["fleet"]
        assert run["policy"] == policy
        assert sorted(fleet["requests"]) == [f"r{n}" for n in range(1, 9)]  # no spare in a comparison
        assert sum(fleet["requests"].values()) > 0
        assert 0.0 <= fleet["hit_rate"] <= 1.0
        assert fleet["prefix_hits"] <= fleet["prefix_queries"]
        assert fleet["ttft_p50_s"] <= fleet["ttft_p95_s"]
        assert fleet["imbalance"] >= 1.0
    spread = report["round_robin"]["fleet"]["requests"].values()
    assert max(spread) - min(spread) <= 3  # round robin: even, up to requests cut by the window
    # Behaviour, not a speed ratio: tiered's replicas hit their caches more often than round robin's
    # on the same seeded traffic. The size of the gap is measured by `pcache demo --compare
    # --duration 30` (README) and `python bench/policy_gap.py`.
    hit = {policy: run["fleet"]["hit_rate"] for policy, run in report.items()}
    assert hit["tiered"] > hit["round_robin"], hit


def test_demo_jsonl_prints_one_compact_line() -> None:
    command = ["demo", "--no-tui", "--duration", "2", "-o", "jsonl"]
    result = subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", *command],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # jsonl: compact, not pretty-printed
    assert json.loads(lines[0])["policy"] == "tiered"
