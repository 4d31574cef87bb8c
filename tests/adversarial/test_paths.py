"""Path traversal from the data plane: only the OpenAI API paths reach a replica, normalised.

The attack of issue 18 item 1: ``/v1/../x`` and ``/v1/%2e%2e/x`` were forwarded as sent and resolved
to ``/x`` on the replica (its fault switch, cache reset and metrics). Every request here is sent
byte for byte (``curl --path-as-is``) to a live router whose only replica records what reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcache.router.paths import api_path, normalise
from pcache.testing.raw_http import raw_request
from pcache.testing.replica import RecordingReplica
from tests.harness.router import RouterProcess

pytestmark = pytest.mark.integration

CHAT = json.dumps({"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}).encode()

TRAVERSALS = [
    "/v1/../sim/faults",
    "/v1/%2e%2e/metrics",
    "/v1//../reset_prefix_cache",
    "/v1/%2E%2E/reset_prefix_cache",
    "/v1/.%2e/sim/faults",
    "/v1%2f..%2fmetrics",
    "/v1/chat/completions/../../metrics",
    "/v1/%252e%252e/metrics",
    "/v1/./chat/completions",
    "/v1/..%5cmetrics",
    "/v1/chat/completions%00",
    "/sim/faults",
    "/reset_prefix_cache",
    "/v1/load_lora_adapter",
    "/v1",
    "/",
]


@pytest.fixture(scope="module")
def replica() -> Iterator[RecordingReplica]:
    with RecordingReplica() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def router(replica: RecordingReplica, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    state = tmp_path_factory.mktemp("paths-router")
    with RouterProcess(replicas={"r1": replica.url}, state_dir=state, upstream={"retries": 0}) as process:
        yield process


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_path_outside_the_api_never_reaches_a_replica(
    router: RouterProcess, replica: RecordingReplica, target: str, method: str
) -> None:
    before = list(replica.hits)
    response = raw_request(router.url, target, method=method, body=b"{}" if method == "POST" else b"")
    assert response.status == 404, response
    error = json.loads(response.body)["error"]
    assert error["code"] == "not_found", response
    assert replica.hits == before, f"{target} reached the replica: {replica.hits[len(before) :]}"


@pytest.mark.parametrize(
    "target", ["/v1/chat/completions/", "//v1//chat/completions", "/v1/chat%2Fcompletions"]
)
def test_an_api_path_is_forwarded_in_its_normal_form(
    router: RouterProcess, replica: RecordingReplica, target: str
) -> None:
    response = raw_request(router.url, target, method="POST", body=CHAT)
    assert response.status == 200, response
    assert replica.hits[-1] == "POST /v1/chat/completions"


def test_the_query_string_is_kept(router: RouterProcess, replica: RecordingReplica) -> None:
    response = raw_request(router.url, "/v1/models/org/name?probe=1")
    assert response.status == 200, response
    assert replica.hits[-1] == "GET /v1/models/org/name?probe=1"


def test_headers_named_in_connection_are_not_forwarded(
    router: RouterProcess, replica: RecordingReplica
) -> None:
    response = raw_request(
        router.url,
        "/v1/chat/completions",
        method="POST",
        body=CHAT,
        headers={"Connection": "close, X-Secret-Hop", "X-Secret-Hop": "internal", "X-Kept": "yes"},
    )
    assert response.status == 200, response
    seen = replica.headers[-1]
    assert "x-secret-hop" not in seen and seen.get("x-kept") == "yes", seen


def test_normalise_resolves_what_a_replica_would_and_refuses_the_rest() -> None:
    assert normalise(b"//v1///chat/completions/") == "/v1/chat/completions"
    assert normalise(b"/v1/chat%2fcompletions") == "/v1/chat/completions"
    for hostile in (b"/v1/../x", b"/v1/%2e%2e/x", b"/v1/%252e/x", b"/v1/\xff", b"/v1/%ff", b"/v1/a%09b"):
        assert normalise(hostile) is None, hostile
    assert api_path(b"/v1/embeddings") == "/v1/embeddings"
    assert api_path(b"/metrics") is None and api_path(b"/v1/../v1/completions") is None


def test_a_replica_redirect_never_shows_its_address(tmp_path: Path) -> None:
    """A replica answering 307 with its own absolute URL: the client sees a relative Location."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            address = self.server.server_address
            assert isinstance(address, tuple)  # an IPv4 listener: (host, port)
            host, port = address[:2]
            self.send_response(200 if self.path in ("/health", "/metrics") else 307)
            if self.path not in ("/health", "/metrics"):
                self.send_header("location", f"http://{host}:{port}/v1/models/x")
            self.send_header("content-length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with RouterProcess(replicas={"r1": url}, state_dir=tmp_path, upstream={"retries": 0}) as router:
            response = raw_request(router.url, "/v1/models/x/")
        assert response.status == 307, response
        assert response.headers["location"] == "/v1/models/x", response
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
