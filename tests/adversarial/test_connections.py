"""Connections the router must not keep, requests it must not finish for nobody, and HTTP details.

Issue 18 items 7, 8 and 12: abandoned generations ran to completion on the replicas; sockets that
never finished a request stayed open until 1,100 of them used up the file descriptors; an HTTP/1.0
client got a chunked answer; a WebSocket upgrade got a 500.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pcache.testing.raw_http import raw_request
from pcache.testing.replica import RecordingReplica
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "write a long story"}]}


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _closed_by_peer(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the other side closed ``sock`` within ``timeout_s`` (reading and discarding data)."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if sock.recv(65536) == b"":
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def _request(body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_cancels_its_upstream_request(tmp_path: Path, stream: bool) -> None:
    with (
        RecordingReplica(hold=True) as replica,
        RouterProcess(replicas={"r1": replica.url}, state_dir=tmp_path, upstream={"retries": 0}) as router,
    ):
        client = _connect(router.url)
        client.sendall(_request({**CHAT, "stream": stream}))
        assert replica.received.wait(30), "the request never reached the replica"
        client.close()  # before the replica's first byte
        assert replica.hung_up.wait(20), "the replica kept generating for a client that left"


@pytest.fixture(scope="module")
def replica() -> Iterator[RecordingReplica]:
    with RecordingReplica() as recorder:
        yield recorder


def test_connections_that_never_finish_a_request_are_closed(
    replica: RecordingReplica, tmp_path: Path
) -> None:
    server = {"head_timeout_s": 1.0, "body_timeout_s": 1.0}
    with RouterProcess(replicas={"r1": replica.url}, state_dir=tmp_path, server=server) as router:
        idle = _connect(router.url)
        slow_head = _connect(router.url)
        slow_head.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        short_body = _connect(router.url)
        short_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        try:
            assert _closed_by_peer(idle, 15), "an idle connection stayed open"
            assert _closed_by_peer(slow_head, 15), "a connection that never finished its head stayed open"
            short_body.settimeout(15)
            answer = b""
            while chunk := short_body.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b'"request_timeout"' in answer
        finally:
            for sock in (idle, slow_head, short_body):
                sock.close()


def test_the_fd_limit_is_raised_and_load_is_shed_before_it(replica: RecordingReplica, tmp_path: Path) -> None:
    server = {"max_connections": 4, "head_timeout_s": 60.0}
    with RouterProcess(replicas={"r1": replica.url}, state_dir=tmp_path, server=server) as router:
        assert router.process is not None
        limits = Path(f"/proc/{router.process.pid}/limits").read_text()
        soft, hard = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[
            3:5
        ]
        assert soft == hard, limits
        held = [_connect(router.url) for _ in range(4)]
        try:
            response = raw_request(router.url, "/v1/models")
            assert response.status == 503, response
        finally:
            for sock in held:
                sock.close()
        assert "Exceeded concurrency limit" in router.stderr


@pytest.fixture(scope="module")
def sim_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with (
        SimFleet(replicas=1) as sim,
        RouterProcess(replicas=sim.urls, state_dir=tmp_path_factory.mktemp("http10")) as router,
    ):
        yield router


def test_an_http10_client_gets_a_stream_with_a_length_not_chunks(sim_router: RouterProcess) -> None:
    body = json.dumps({**CHAT, "stream": True, "max_tokens": 5}).encode()
    response = raw_request(
        sim_router.url,
        "/v1/chat/completions",
        method="POST",
        body=body,
        headers={"content-type": "application/json"},
        version="HTTP/1.0",
    )
    assert response.status == 200, response
    assert "transfer-encoding" not in response.headers, response
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.body.rstrip().endswith(b"data: [DONE]"), response


@pytest.mark.parametrize("target", ["/v1/chat/completions", "/v1/models", "/health"])
def test_a_websocket_upgrade_gets_a_clean_400(sim_router: RouterProcess, target: str) -> None:
    response = raw_request(
        sim_router.url,
        target,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert response.status == 400, response
    assert json.loads(response.body)["error"]["code"] == "upgrade_not_supported"


def test_a_large_non_streamed_answer_is_passed_through_not_buffered(tmp_path: Path) -> None:
    answer = b'{"id":"big","choices":[],"padding":"' + b"p" * (3 * 1024 * 1024) + b'"}'
    with (
        RecordingReplica(answer=answer) as big,
        RouterProcess(
            replicas={"r1": big.url}, state_dir=tmp_path, upstream={"max_response_bytes": 1024 * 1024}
        ) as router,
    ):
        body = json.dumps(CHAT).encode()
        response = raw_request(router.url, "/v1/chat/completions", method="POST", body=body)
        assert response.status == 200, response
        assert response.body == answer
        assert response.headers["content-length"] == str(len(answer))
        assert response.headers["x-pcache-replica"] == "r1"
