"""The adversarial review's long-running attacks against a live router, measured against issue 18's bars.

    .venv/bin/python bench/attack.py            # every attack, one table
    .venv/bin/python bench/attack.py --only health_during_16mib,user_rss

Each attack starts its own router (``pcache.testing.RouterProcess``) in front of recording fake
replicas (``pcache.testing.replica``) on loopback, runs, and reports one row: what was measured,
the bar, and whether it was met. Timings are wall clock on whatever machine runs this, so on a
shared machine read them with its load in mind (printed first); the functional versions of these
attacks, with assertions that do not depend on speed, are ``tests/adversarial/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pcache.router.server import raise_fd_limit
from pcache.testing import RouterProcess, eventually
from pcache.testing.raw_http import raw_request
from pcache.testing.replica import RecordingReplica

MIB = 1024 * 1024
CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
Row = tuple[str, str, str, bool]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _router(replicas: dict[str, str], **config: object) -> RouterProcess:
    return RouterProcess(replicas=replicas, state_dir=tempfile.mkdtemp(prefix="attack-"), **config)


def _health_during(router: RouterProcess, attack: Callable[[], None]) -> tuple[float, int]:
    """The slowest /health answer while ``attack`` runs in a thread, and how many were measured."""
    thread = threading.Thread(target=attack)
    slowest, count = 0.0, 0
    with httpx.Client(timeout=60) as client:
        thread.start()
        while thread.is_alive():
            started = time.perf_counter()
            client.get(f"{router.url}/health")
            slowest, count = max(slowest, time.perf_counter() - started), count + 1
            time.sleep(0.02)
    thread.join()
    return slowest, count


def _gauge(router: RouterProcess, name: str) -> float:
    for line in httpx.get(f"{router.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return float("nan")


def path_traversal() -> list[Row]:
    targets = ["/v1/../sim/faults", "/v1/%2e%2e/metrics", "/v1//../reset_prefix_cache", "/v1/%252e%252e/x"]
    with RecordingReplica() as replica, _router({"r1": replica.url}) as router:
        statuses = [raw_request(router.url, t, method="POST", body=b"{}").status for t in targets]
    reached = len(replica.hits)
    ok = reached == 0 and set(statuses) == {404}
    return [
        ("path traversal", f"statuses {sorted(set(statuses))}, {reached} reached a replica", "404, 0", ok)
    ]


def _parts_body(part: bytes, size: int) -> bytes:
    count = (size - 200) // (len(part) + 1)
    return (
        b'{"model":"sim-model","messages":[{"role":"user","content":[' + b",".join([part] * count) + b"]}]}"
    )


def health_during_16mib() -> list[Row]:
    rows: list[Row] = []
    bodies = {
        "16 MiB of text parts": _parts_body(b'{"type":"text","text":"a"}', 16 * MIB),
        "15.8 MB of image parts": _parts_body(b'{"type":"image_url","image_url":{"url":"u"}}', 15_800_000),
    }
    with RecordingReplica() as replica, _router({"r1": replica.url}, upstream={"retries": 0}) as router:
        assert router.process is not None
        for name, body in bodies.items():
            statuses: list[int] = []
            cpu = _cpu_s(router.process.pid)

            def attack(body: bytes = body, statuses: list[int] = statuses) -> None:
                headers = {"content-type": "application/json"}
                statuses.append(
                    httpx.post(
                        f"{router.url}/v1/chat/completions", content=body, headers=headers, timeout=300
                    ).status_code
                )

            slowest, count = _health_during(router, attack)
            used = _cpu_s(router.process.pid) - cpu
            stall = _gauge(router, "pcache_event_loop_stall_seconds")
            lag = _gauge(router, "pcache_event_loop_lag_seconds")
            rows.append(
                (
                    f"/health during {name}",
                    f"slowest {slowest * 1000:.0f} ms of {count}; HTTP {statuses}; router CPU {used:.2f} s",
                    "< 250 ms",
                    slowest < 0.25 and statuses == [200],
                )
            )
            rows.append(
                (
                    f"loop stall, {name}",
                    f"{stall * 1000:.0f} ms (lag {lag * 1000:.0f} ms)",
                    "< 100 ms",
                    stall < 0.1,
                )
            )
    return rows


def user_rss() -> list[Row]:
    filler = "u" * MIB
    with RecordingReplica() as replica, _router({"r1": replica.url}) as router:
        assert router.process is not None

        def send(i: int) -> None:
            body = {**CHAT, "user": f"{i:04d}{filler}"}
            httpx.post(f"{router.url}/v1/chat/completions", json=body, timeout=60).raise_for_status()

        for i in range(5):
            send(i)
        before = _rss(router.process.pid)
        for i in range(5, 55):
            send(i)
        grown = _rss(router.process.pid) - before
    return [("50 requests with 1 MB user", f"RSS +{grown / MIB:.1f} MiB", "< 20 MiB", grown < 20 * MIB)]


def idle_sockets() -> list[Row]:
    raise_fd_limit()  # this process holds the 1,100 sockets
    with RecordingReplica() as replica, _router({"r1": replica.url}, server={"head_timeout_s": 3}) as router:
        parts = urlsplit(router.url)
        assert parts.hostname is not None and parts.port is not None
        held = [socket.create_connection((parts.hostname, parts.port)) for _ in range(1100)]
        try:
            chat = json.dumps(CHAT).encode()
            during = raw_request(router.url, "/v1/chat/completions", method="POST", body=chat).status
            time.sleep(4)  # the head deadline passes: the router closes every one of them
            for sock in held:
                sock.settimeout(0.01)
            closed = 0
            for sock in held:
                with contextlib.suppress(TimeoutError, ConnectionResetError):
                    closed += sock.recv(1) == b""
            after = raw_request(router.url, "/v1/chat/completions", method="POST", body=chat).status
        finally:
            for sock in held:
                sock.close()
    return [
        (
            "1,100 idle sockets",
            f"new request HTTP {during}; {closed} closed by the head deadline",
            "200, 1100",
            during == 200 and closed == 1100,
        ),
        ("after the idle sockets", f"HTTP {after}", "200", after == 200),
    ]


def admin_body() -> list[Row]:
    with RecordingReplica() as replica, _router({"r1": replica.url}) as router:
        assert router.process is not None
        before = _rss(router.process.pid)
        body = b'{"body": {"prompt": "' + b"x" * (100 * MIB) + b'"}}'
        try:
            status = httpx.post(
                f"{router.admin_url}/api/v1/route/explain", content=body, timeout=120
            ).status_code
        except httpx.HTTPError as exc:  # the router may close the connection while we still send
            status = getattr(getattr(exc, "response", None), "status_code", 413)
        grown = _rss(router.process.pid) - before
    return [
        (
            "100 MB explain body",
            f"HTTP {status}, RSS +{grown / MIB:.1f} MiB",
            "413, < 20 MiB",
            status == 413 and grown < 20 * MIB,
        )
    ]


def metrics_page() -> list[Row]:
    page = b"".join(b'junk_total{i="%d"} 1.0\n' % i for i in range(2_200_000))  # ~50 MB
    with (
        RecordingReplica(metrics=page) as replica,
        _router({"r1": replica.url}, scrape={"interval_s": 0.5}) as router,
    ):
        slowest, count = _health_during(router, lambda: time.sleep(3))  # several scrapes meanwhile
        stall = _gauge(router, "pcache_event_loop_stall_seconds")
        refused = "answered more than" in router.stderr
    return [
        (
            "50 MB /metrics page",
            f"refused: {refused}; loop stall {stall * 1000:.0f} ms; "
            f"/health slowest {slowest * 1000:.0f} ms of {count}",
            "refused, < 100 ms",
            refused and stall < 0.1,
        )
    ]


def abandoned() -> list[Row]:
    cancelled = 0
    for stream in (False, True, False, True, False, True):
        with (
            RecordingReplica(hold=True) as replica,
            _router({"r1": replica.url}, upstream={"retries": 0}) as router,
        ):
            parts = urlsplit(router.url)
            assert parts.hostname is not None and parts.port is not None
            data = json.dumps({**CHAT, "stream": stream}).encode()
            client = socket.create_connection((parts.hostname, parts.port))
            client.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data)
                + data
            )
            eventually(replica.received.is_set, timeout_s=30, what="the request to reach the replica")
            client.close()
            cancelled += replica.hung_up.wait(20)
    return [("6 abandoned generations", f"{cancelled} of 6 cancelled upstream", "6", cancelled == 6)]


ATTACKS: dict[str, Callable[[], list[Row]]] = {
    "path_traversal": path_traversal,
    "health_during_16mib": health_during_16mib,
    "user_rss": user_rss,
    "idle_sockets": idle_sockets,
    "admin_body": admin_body,
    "metrics_page": metrics_page,
    "abandoned": abandoned,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated attack names: " + ", ".join(ATTACKS))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack {unknown[0]!r}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", file=sys.stderr)
    rows: list[Row] = []
    for name in names:
        print(f"running {name}...", file=sys.stderr, flush=True)
        rows.extend(ATTACKS[name]())
    width = max(len(r[0]) for r in rows)
    measured = max(len(r[1]) for r in rows)
    print(f"{'attack':<{width}}  {'measured':<{measured}}  {'bar':<18}  met")
    for attack, result, bar, ok in rows:
        print(f"{attack:<{width}}  {result:<{measured}}  {bar:<18}  {'yes' if ok else 'NO'}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
