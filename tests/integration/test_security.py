"""Security and input limits of a live router: who may write, what it accepts, what it never does.

Admin API loopback by default and refusing a non-loopback listener without a token; every write
(taken from the router's own OpenAPI document) needs the bearer token, compared in constant time;
bodies over the limit get 413, malformed or hostile JSON 400, oversized headers 431, all with
OpenAI-style error bodies; ``replicas add`` takes only http(s) URLs; a replica's redirect is never
followed; the admin token, client API keys and prompt texts never reach the router's log.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest
import yaml
from starlette.testclient import TestClient

from pcache.api import ExplainRequest, PinIn
from pcache.router.config import is_loopback, parse_config, split_host_port
from pcache.router.daemon import RouterDaemon
from pcache.state import ReplicaRecord, SqliteStateStore, StateError
from pcache.testing.http import expect_status
from pcache.testing.router import RouterProcess
from pcache.testing.sim import SimFleet

MODEL = "sim-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=2) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def router(sim: SimFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    state = tmp_path_factory.mktemp("security-router")
    with RouterProcess(replicas=sim.urls, state_dir=state, log_level="debug") as process:
        yield process


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert "code" in error
    return dict(error)


# ---- admin API access ---------------------------------------------------------------------------


def test_both_listeners_default_to_loopback() -> None:
    config = parse_config("")
    for address in (config.listen, config.admin.listen):
        host, _ = split_host_port(address)
        assert is_loopback(host), address
    assert not is_loopback("0.0.0.0") and not is_loopback("::")


class _CompareSpy:
    """Stands in for ``hmac.compare_digest`` and records every pair it was asked to compare."""

    def __init__(self, real: Callable[[bytes, bytes], bool]) -> None:
        self.real = real
        self.pairs: list[tuple[bytes, bytes]] = []

    def __call__(self, a: bytes | str, b: bytes | str) -> bool:
        pair = (a.encode() if isinstance(a, str) else a, b.encode() if isinstance(b, str) else b)
        self.pairs.append(pair)
        return self.real(*pair)


def test_admin_and_data_plane_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every presented token, right or wrong, short or long, reaches ``hmac.compare_digest`` against
    the configured secret (and the data plane compares it with every API key), so no early-exit
    ``==`` can leak how much of a guess was right."""
    spy = _CompareSpy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setenv("PCACHE_SECURITY_ADMIN_TOKEN", "admin-secret-for-tests")
    monkeypatch.setenv("PCACHE_SECURITY_API_KEYS", "key-one,key-two")
    config = parse_config(
        "state: 'memory://'\n"
        "admin: {token_env: PCACHE_SECURITY_ADMIN_TOKEN}\n"
        "api_keys_env: PCACHE_SECURITY_API_KEYS\n"
    )
    daemon = RouterDaemon(config)
    with TestClient(daemon.admin) as admin:
        for guess, status in (("admin-secret-for-testX", 401), ("a", 401), ("admin-secret-for-tests", 404)):
            answer = admin.post("/api/v1/replicas/nope/drain", headers={"authorization": f"Bearer {guess}"})
            assert answer.status_code == status, answer.text
            assert (guess.encode(), b"admin-secret-for-tests") in spy.pairs
    spy.pairs.clear()
    with TestClient(daemon.proxy) as proxy:
        answer = proxy.post("/v1/completions", json=CHAT, headers={"authorization": "Bearer key-tw"})
        assert answer.status_code == 401, answer.text
    assert spy.pairs == [(b"key-tw", b"key-one"), (b"key-tw", b"key-two")]


def test_router_refuses_a_non_loopback_admin_listener_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    document = {
        "listen": "127.0.0.1:0",
        "admin": {"listen": "0.0.0.0:0", "token_env": "PCACHE_TEST_UNSET_TOKEN"},
        "state": "memory://",
    }
    config.write_text(yaml.safe_dump(document))
    env = {k: v for k, v in os.environ.items() if k != "PCACHE_TEST_UNSET_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", "router", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # never printed "ready"


_POST_READS = {"/api/v1/route/explain"}  # a read with a body: open unless admin.auth_reads
_VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/replicas": {"name": "r9", "url": "http://127.0.0.1:9"},
    "/api/v1/pins/{name}": {"text": "You are a helpful assistant. " * 20, "copies": 1},
    "/api/v1/prewarm": {"prefixes": [{"text": "You are a helpful assistant. " * 20}]},
}


def _write_operations(router: RouterProcess) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every non-GET operation of the admin API (from its own OpenAPI document) with a valid body."""
    document = httpx.get(f"{router.admin_url}/openapi.json", timeout=5).json()
    operations: list[tuple[str, str, dict[str, Any] | None]] = []
    for path, methods in document["paths"].items():
        for method in methods:
            if method.upper() != "GET" and path not in _POST_READS:
                concrete = path.replace("{name}", "r1").replace("{job_id}", "x")
                operations.append((method.upper(), concrete, _VALID_BODIES.get(path)))
    return operations


def test_every_admin_write_needs_the_bearer_token(router: RouterProcess) -> None:
    """Refused before anything changes, and before the body is even validated (no schema hints)."""
    operations = _write_operations(router)
    assert len(operations) >= 7, operations  # add, remove, drain, undrain, pin, unpin, prewarm
    for method, path, body in operations:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {router.token}"}):
            for payload in (body, {"bogus": True}):
                response = httpx.request(
                    method, f"{router.admin_url}{path}", json=payload, headers=headers, timeout=5
                )
                error = _assert_openai_error(response, 401)
                assert error["type"] == "authentication_error", (method, path)
                assert response.headers["www-authenticate"] == "Bearer"
    with router.admin() as admin:
        assert [(r.name, r.state) for r in admin.replicas()] == [("r1", "healthy"), ("r2", "healthy")]
        assert admin.pins() == []


def test_reads_need_the_token_when_auth_reads_is_set(sim: SimFleet, tmp_path: Path) -> None:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path, admin={"auth_reads": True}) as router:
        anonymous = httpx.get(f"{router.admin_url}/api/v1/status", timeout=5)
        _assert_openai_error(anonymous, 401)
        with router.admin() as admin:
            assert len(admin.replicas()) == 2


# ---- request limits and bad input on the data plane ---------------------------------------------


def test_a_body_over_the_limit_gets_413_whether_announced_or_streamed(router: RouterProcess) -> None:
    url = f"{router.url}/v1/chat/completions"
    limit = 16 * 1024 * 1024
    announced = httpx.post(url, content=b"x" * (limit + 1), timeout=30)
    assert _assert_openai_error(announced, 413)["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: the limit must hold while reading
        for _ in range(17):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(url, content=chunks(), timeout=30)
    assert _assert_openai_error(streamed, 413)["code"] == "request_too_large"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{nope", id="malformed-json"),
        pytest.param(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', id="invalid-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-array"),
        pytest.param(b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="deep-messages"),
        pytest.param(b'["a", "list"]', id="not-an-object"),
        pytest.param(b'{"messages": "not a list"}', id="wrong-type"),
        pytest.param(b'{"model": "m"}', id="no-prompt"),
        pytest.param(b"", id="empty"),
    ],
)
def test_bad_bodies_get_400_with_an_openai_error(router: RouterProcess, body: bytes) -> None:
    """Regression: deeply nested JSON crashed the proxy with a plain-text 500 (RecursionError)."""
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert _assert_openai_error(response, 400)["type"] == "invalid_request_error"


def test_oversized_request_headers_get_431(router: RouterProcess) -> None:
    url = f"{router.url}/v1/chat/completions"
    huge = httpx.post(url, json=CHAT, headers={"x-padding": "a" * 200_000}, timeout=10)
    assert _assert_openai_error(huge, 431)["code"] == "request_headers_too_large"
    many = httpx.post(url, json=CHAT, headers={f"x-h{i}": "v" for i in range(1000)}, timeout=10)
    assert _assert_openai_error(many, 431)["code"] == "request_headers_too_large"
    normal = httpx.post(url, json=CHAT, headers={"x-session-id": "s" * 200}, timeout=10)
    expect_status(normal, 200)


def _add_replica(router: RouterProcess, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{router.admin_url}/api/v1/replicas",
        content=content,
        headers={"authorization": f"Bearer {router.token}", "content-type": "application/json"},
        timeout=5,
    )


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/",
        "gopher://127.0.0.1:70/",
        "unix:///var/run/docker.sock",
        "javascript:alert(1)",
        "127.0.0.1:9000",
        "//127.0.0.1:9000",
        " http://127.0.0.1:9000",
        # Regression: these started with http:// and were accepted (found by test_security).
        "http://",
        "http://:8000",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://[::1",
        "http://127.0.0.1:9 /x",
        "http://127.0.0.1:9\r\nX-Injected: yes",
        "http://user:secret@127.0.0.1:9",
        "http://127.0.0.1:9/?next=http://elsewhere",
        "http://127.0.0.1:9/#frag",
    ],
)
def test_replicas_add_accepts_only_well_formed_http_urls(router: RouterProcess, url: str) -> None:
    response = _add_replica(router, {"name": "evil", "url": url})
    assert _assert_openai_error(response, 422)["code"] in ("invalid_url", "invalid_request")
    with router.admin() as admin:
        assert "evil" not in [r.name for r in admin.replicas()]


def test_well_formed_replica_urls_are_accepted(router: RouterProcess) -> None:
    with router.admin() as admin:
        for name, url in (("v4", "http://127.0.0.1:9/"), ("v6", "https://[::1]:8443/base")):
            response = _add_replica(router, {"name": name, "url": url})
            assert response.status_code == 201, response.text
            assert response.json()["url"] == url.rstrip("/")
            admin.remove_replica(name)


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/api/v1/replicas", "POST", b'{"name": "s1", "url": "http://127.0.0.1:9", "group": "\\ud800"}'),
        ("/api/v1/pins/s2", "PUT", b'{"text": "' + b"You are a bot. " * 30 + b'", "group": "\\udfff"}'),
        (
            "/api/v1/prewarm",
            "POST",
            b'{"prefixes": [{"text": "' + b"Be kind. " * 40 + b'", "name": "\\ud800"}]}',
        ),
        ("/api/v1/route/explain", "POST", b'{"body": {"prompt": "x"}, "session": "\\ud800"}'),
        (
            "/api/v1/route/explain",
            "POST",
            b'{"body": {"prompt": "x"}, "headers": {"x-session-id": "\\ud800"}}',
        ),
    ],
)
def test_lone_surrogates_in_admin_bodies_get_422_and_never_poison_the_state_store(
    router: RouterProcess, path: str, method: str, body: bytes
) -> None:
    """Regression: a lone surrogate in an unconstrained field (group, prewarm name, session) got a
    500, and in a write it left the sqlite connection inside a transaction, so the operator's next
    write failed with 500 too (found by test_security)."""
    headers = {"authorization": f"Bearer {router.token}", "content-type": "application/json"}
    response = httpx.request(method, f"{router.admin_url}{path}", content=body, headers=headers, timeout=5)
    _assert_openai_error(response, 422)
    with router.admin() as admin:
        admin.drain("r2")  # the next write still works
        admin.undrain("r2")
        assert [(r.name, r.state) for r in admin.replicas()] == [("r1", "healthy"), ("r2", "healthy")]


async def test_a_failed_state_write_rolls_back_and_the_store_keeps_working(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite")
    try:
        with pytest.raises(StateError):
            await store.put_replica(ReplicaRecord(name="x", url="http://127.0.0.1:9", group="\ud800"))
        await store.set_drain("r1", "draining")
        await store.put_replica(ReplicaRecord(name="y", url="http://127.0.0.1:9"))
        state = await store.load()
        assert state.drains == {"r1": "draining"} and list(state.replicas) == ["y"]
    finally:
        await store.close()


# ---- redirects from replicas are never followed ---------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """A replica that is healthy but answers every completion with a redirect to ``target``."""

    target: ClassVar[str] = ""
    hits: ClassVar[list[str]] = []

    def _answer(self) -> None:
        self.hits.append(f"{self.command} {self.path}")
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/health":
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("location", self.target + self.path)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server:
    def __init__(self, target: str = "") -> None:
        self.hits: list[str] = []
        handler = type("Handler", (_Recorder,), {"target": target, "hits": self.hits})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_a_replica_redirect_is_passed_back_never_followed(client: str, tmp_path: Path) -> None:
    with _Server() as trap, _Server(target=trap.url) as redirector:
        with RouterProcess(
            replicas={"r1": redirector.url}, state_dir=tmp_path, upstream={"client": client, "retries": 0}
        ) as router:
            response = httpx.post(f"{router.url}/v1/chat/completions", json=CHAT, timeout=10)
            passthrough = httpx.post(f"{router.url}/v1/embeddings", json={"input": "x"}, timeout=10)
        assert response.status_code == 302 or response.status_code >= 500, response.text
        assert passthrough.status_code == 302 or passthrough.status_code >= 500
        assert any("/v1/chat/completions" in hit for hit in redirector.hits)
        assert trap.hits == [], "the router followed a replica's redirect"


# ---- nothing secret in the logs ----------------------------------------------------------------------


def test_tokens_and_prompt_texts_never_reach_the_log(router: RouterProcess, sim: SimFleet) -> None:
    prompt = "ZEBRA-PROMPT-7731 please summarise the confidential merger memo"
    prefix_text = "QUOKKA-SYSTEM-4410 You are the internal legal assistant. " * 10
    api_key = "sk-client-SECRET-8842"
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key=api_key, max_retries=0, timeout=10)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=2)
    with router.admin() as admin:
        admin.pin("legal", PinIn(text=prefix_text, copies=1))
        admin.explain(ExplainRequest(body={"messages": [{"role": "system", "content": prefix_text}]}))
        admin.unpin("legal")
    # Failures make the router log warnings: they must not carry request contents either.
    sim.set_faults("r1", error_rate=1.0)
    sim.set_faults("r2", error_rate=1.0)
    try:
        for _ in range(3):
            httpx.post(
                f"{router.url}/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": prompt}]},
                headers={"authorization": f"Bearer {api_key}"},
                timeout=10,
            )
        httpx.post(f"{router.admin_url}/api/v1/replicas/r1/drain", headers={"authorization": "Bearer guess"})
    finally:
        sim.set_faults("r1", error_rate=0.0)
        sim.set_faults("r2", error_rate=0.0)
    log = router.stderr
    assert "pinned Tier-1 prefix legal" in log, "the log is being captured at all"
    for secret in (router.token or "unset", api_key, "ZEBRA-PROMPT", "QUOKKA-SYSTEM", "guess"):
        assert secret not in log, f"{secret!r} was written to the router's log"
