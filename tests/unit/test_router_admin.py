"""The admin API in process (httpx ASGITransport): paths, auth, errors, explain, dry runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pcache.api import ExplainRequest, PinIn
from pcache.client import AdminClient, NotFound, Refused, Unauthorized
from pcache.fleet_view import Tier1Prefix
from pcache.router.config import ConfigError, load_config, parse_config
from pcache.router.daemon import RouterDaemon
from pcache.testing.http import expect_status

TOKEN = "unit-admin-t0ken-1234"
SYSTEM = "You are a helpful assistant for the ACME store. " * 20
CONFIG = f"""
admin: {{token_env: PCACHE_UNIT_ADMIN_TOKEN}}
replicas:
  - {{name: r1, url: "http://127.0.0.1:9"}}
  - {{name: r2, url: "http://127.0.0.1:10"}}
  - {{name: r3, url: "http://127.0.0.1:11"}}
tier1:
  - {{name: shop, text: "{SYSTEM}", copies: 2}}
"""


@pytest.fixture()
async def daemon(monkeypatch: pytest.MonkeyPatch) -> RouterDaemon:
    monkeypatch.setenv("PCACHE_UNIT_ADMIN_TOKEN", TOKEN)
    built = RouterDaemon(parse_config(CONFIG))
    await built.actions.restore()  # serve() does this before it listens
    return built


@pytest.fixture()
async def admin(daemon: RouterDaemon) -> AsyncIterator[AdminClient]:
    transport = httpx.ASGITransport(app=daemon.admin)
    async with AdminClient("http://admin", token=TOKEN, transport=transport) as client:
        yield client


def test_a_non_loopback_admin_address_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PCACHE_UNIT_ADMIN_TOKEN", raising=False)
    config = parse_config("admin: {listen: '0.0.0.0:8081', token_env: PCACHE_UNIT_ADMIN_TOKEN}\n")
    with pytest.raises(ConfigError, match="not a loopback address"):
        RouterDaemon(config)


def test_an_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="policy"):
        RouterDaemon(parse_config("policy: {name: nonsense}\n"))


async def test_the_openapi_schema_lists_every_client_path(daemon: RouterDaemon) -> None:
    transport = httpx.ASGITransport(app=daemon.admin)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        schema = (await http.get("/openapi.json")).json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/status",
        "/api/v1/replicas",
        "/api/v1/replicas/{name}",
        "/api/v1/replicas/{name}/drain",
        "/api/v1/replicas/{name}/undrain",
        "/api/v1/prefixes",
        "/api/v1/pins",
        "/api/v1/pins/{name}",
        "/api/v1/route/explain",
        "/api/v1/prewarm",
        "/api/v1/prewarm/{job_id}",
        "/api/v1/drift",
    } <= paths


async def test_writes_need_the_bearer_token(daemon: RouterDaemon) -> None:
    transport = httpx.ASGITransport(app=daemon.admin)
    async with AdminClient("http://admin", transport=transport) as anonymous:
        assert len(await anonymous.replicas()) == 3
        with pytest.raises(Unauthorized):
            await anonymous.drain("r1", dry_run=True)
    async with AdminClient("http://admin", token="nope", transport=transport) as wrong:
        with pytest.raises(Unauthorized):
            await wrong.undrain("r1")


async def test_errors_are_openai_style(daemon: RouterDaemon) -> None:
    transport = httpx.ASGITransport(app=daemon.admin)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://admin", headers=headers) as http:
        for response in (
            await http.get("/api/v1/nothing-here"),
            await http.post("/api/v1/replicas", json={"name": "", "url": "x"}),
            await http.get("/api/v1/prefixes", params={"top": 0}),
            await http.post("/api/v1/replicas/ghost/undrain"),
        ):
            error = response.json()["error"]
            expect_status(response, 404, 422)
            assert error["message"] and error["type"]


async def test_explain_returns_the_decision_without_booking_it(
    admin: AdminClient, daemon: RouterDaemon
) -> None:
    body: dict[str, object] = {
        "model": "m",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}],
    }
    decision = await admin.explain(ExplainRequest(body=body, session="s1"))
    assert decision.tier1 == "shop"
    assert decision.replica in {"r1", "r2", "r3"}
    assert {c.replica for c in decision.candidates} == {"r1", "r2", "r3"}
    assert decision.session == "s1" and decision.blocks > 0
    assert daemon.ledger.requests_total() == 0
    with pytest.raises(Refused):
        await admin.explain(ExplainRequest(body={"messages": []}))


async def test_a_dry_run_drain_reports_the_blast_radius_and_changes_nothing(admin: AdminClient) -> None:
    owners = next(p for p in await admin.pins() if p.name == "shop").owners
    radius = await admin.drain(owners[0], dry_run=True)
    assert radius.dry_run
    assert [move.prefix for move in radius.tier1] == ["shop"]
    assert owners[0] not in radius.tier1[0].successors and len(radius.tier1[0].successors) == 2
    assert all(r.state == "healthy" for r in await admin.replicas())


async def test_config_prefixes_cannot_be_unpinned_and_unknown_ones_are_404(admin: AdminClient) -> None:
    with pytest.raises(Refused) as refused:
        await admin.unpin("shop")
    assert refused.value.status == 409
    with pytest.raises(NotFound):
        await admin.unpin("ghost")


async def test_a_registered_prefix_is_pinned_by_name_alone(admin: AdminClient) -> None:
    before = next(p for p in await admin.pins() if p.name == "shop")
    pinned = await admin.pin("shop", PinIn(replicas=["r3"]))
    assert pinned.source == "pin" and pinned.replicas == ["r3"] and pinned.owners == ["r3"]
    assert pinned.text_head == before.text_head and pinned.tokens == before.tokens
    restored = await admin.unpin("shop")
    assert restored.name == "shop"
    assert next(p for p in await admin.pins() if p.name == "shop").source == "config"


async def test_pin_names_follow_the_config_name_rule(admin: AdminClient) -> None:
    with pytest.raises(Refused) as refused:
        await admin.pin("bad name!", PinIn(text="x" * 600))
    assert refused.value.status == 422
    assert "bad name!" not in [p.name for p in await admin.pins()]


async def test_the_data_plane_rejects_bad_requests_with_openai_errors(daemon: RouterDaemon) -> None:
    transport = httpx.ASGITransport(app=daemon.proxy)
    async with httpx.AsyncClient(transport=transport, base_url="http://data") as http:
        too_big = await http.post("/v1/completions", content=b"x" * (daemon.proxy.max_body_bytes + 1))
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
        not_json = await http.post("/v1/completions", content=b"{")
        expect_status(not_json, 400)
        wrong_method = await http.get("/v1/chat/completions")
        expect_status(wrong_method, 405)
        for name in ("r1", "r2", "r3"):
            daemon.fleet.set_drain(name, "draining")
        none_left = await http.post("/v1/completions", json={"model": "m", "prompt": "hello"})
        assert none_left.status_code == 503 and none_left.json()["error"]["code"] == "no_replica"
        metrics = await http.get("/metrics")
        assert b"pcache_requests_total" in metrics.content


async def test_data_plane_api_keys_are_required_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCACHE_UNIT_API_KEYS", "key-one, key-two")
    daemon = RouterDaemon(parse_config("api_keys_env: PCACHE_UNIT_API_KEYS\n" + CONFIG))
    await daemon.actions.restore()
    for name in ("r1", "r2", "r3"):
        daemon.fleet.set_drain(name, "draining")  # a request that gets past the key check gets 503
    transport = httpx.ASGITransport(app=daemon.proxy)
    body = {"model": "m", "prompt": "hello"}
    async with httpx.AsyncClient(transport=transport, base_url="http://data") as http:
        missing = await http.post("/v1/completions", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        wrong = await http.post("/v1/completions", json=body, headers={"authorization": "Bearer key-three"})
        expect_status(wrong, 401)
        basic = await http.post("/v1/models", headers={"authorization": "Basic a2V5LW9uZQ=="})
        expect_status(basic, 401)
        for key in ("key-one", "key-two"):
            ok = await http.post("/v1/completions", json=body, headers={"authorization": f"Bearer {key}"})
            assert ok.status_code == 503, ok.text  # authorized; no replica is routable
        expect_status((await http.get("/health")), 200)  # probes and scrapes need no key
        expect_status((await http.get("/metrics")), 200)


def test_no_api_keys_env_means_no_key_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCACHE_UNIT_API_KEYS", "")
    assert parse_config("api_keys_env: PCACHE_UNIT_API_KEYS\n").api_keys() == ()
    assert parse_config("listen: 127.0.0.1:8080\n").api_keys() == ()


def test_owners_are_what_the_policy_routes_to(daemon: RouterDaemon) -> None:
    prefix = daemon.fleet.tier1["shop"]
    owners = daemon.routing.owners_of(prefix)
    assert len(owners) == 2
    pinned = Tier1Prefix(name="vip", blocks=prefix.blocks[:2], pinned=("r3",))
    assert daemon.routing.owners_of(pinned) == ["r3"]
    daemon.fleet.set_drain(owners[0], "draining")
    after = daemon.routing.owners_of(prefix)
    assert owners[0] not in after and owners[1] in after and len(after) == 2


async def test_a_config_tier1_prefix_shorter_than_one_block_is_refused_at_start() -> None:
    config = parse_config("tier1:\n  - {name: tiny, text: 'Be nice.'}\n")
    with pytest.raises(ConfigError, match=r"tiny.*shorter than one routing block"):
        await RouterDaemon(config).actions.restore()


async def test_the_example_config_builds_a_daemon() -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "router.yaml"
    daemon = RouterDaemon(load_config(example).model_copy(update={"state": "memory://"}))
    await daemon.actions.restore()
    assert [e.name for e in daemon.fleet.entries()] == ["r1", "r2", "r3", "r4"]
    assert list(daemon.fleet.tier1) == ["support-bot"]
