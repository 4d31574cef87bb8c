"""Secure by default: who may write to the admin API of a router started with no token configured.

Issue 18 items 10 and 11: with no token the admin API accepted every write, a cross-origin form POST
drained a replica, a 1-character token was enough to bind to 0.0.0.0, and a 100 MB explain body was
read whole. Now the router generates a token (owner-only file), the CLI on the same machine uses it,
browsers' cross-origin requests and oversized bodies are refused before the app reads them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pcache.credentials import token_path
from tests.harness.router import RouterProcess, RouterStartError
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet(replicas=2) as fleet:
        yield fleet


@pytest.fixture()
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "user-state"
    monkeypatch.setenv("PCACHE_STATE_DIR", str(directory))
    return directory


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PCACHE_ADMIN_TOKEN"}
    env.update({"NO_COLOR": "1", "PCACHE_CONFIG": "", "XDG_CONFIG_HOME": "/nonexistent"})
    return subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_with_no_token_configured_writes_need_the_generated_one(
    sim: SimFleet, state_dir: Path, tmp_path: Path
) -> None:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path / "router", admin_token=None) as router:
        anonymous = httpx.post(f"{router.admin_url}/api/v1/replicas/r1/drain", timeout=10)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json()["error"]["type"] == "authentication_error"
        path = token_path()
        assert path.parent == state_dir
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        drained = _cli("--router", router.admin_url, "drain", "r1", "--yes")
        assert drained.returncode == 0, drained.stderr
        status = httpx.get(f"{router.admin_url}/api/v1/replicas/r1", timeout=10).json()
        assert status["state"] in ("draining", "drained"), status
        token = path.read_text().strip()
        assert token not in router.stderr, "the generated token reached the log"
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path / "router", admin_token=None) as again:
        assert path.read_text().strip() == token, "a restart must keep the generated token"
        undrained = httpx.post(
            f"{again.admin_url}/api/v1/replicas/r1/undrain",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert undrained.status_code == 200, undrained.text


def test_a_token_file_others_can_read_is_refused(sim: SimFleet, state_dir: Path, tmp_path: Path) -> None:
    state_dir.mkdir(mode=0o700)
    token_path().write_text("a-token-anyone-can-read-here\n")
    token_path().chmod(0o644)
    with pytest.raises(RouterStartError, match="readable by others"):
        RouterProcess(replicas=sim.urls, state_dir=tmp_path, admin_token=None).start()


@pytest.mark.parametrize("token", ["x", "   ", "short-token"])
def test_a_short_or_blank_token_is_refused_at_start(sim: SimFleet, tmp_path: Path, token: str) -> None:
    with pytest.raises(RouterStartError, match=r"admin\.token_env: the admin token from"):
        RouterProcess(replicas=sim.urls, state_dir=tmp_path, admin_token=token).start()


@pytest.fixture(scope="module")
def router(sim: SimFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with RouterProcess(replicas=sim.urls, state_dir=tmp_path_factory.mktemp("guarded")) as process:
        yield process


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "http://evil.example"},
    ],
)
def test_cross_origin_browser_requests_are_refused(router: RouterProcess, headers: dict[str, str]) -> None:
    auth = {"authorization": f"Bearer {router.token}"}
    response = httpx.post(
        f"{router.admin_url}/api/v1/replicas/r2/drain?dry_run=true", headers={**auth, **headers}, timeout=10
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "cross_origin"
    read = httpx.get(f"{router.admin_url}/api/v1/status", headers=headers, timeout=10)
    assert read.status_code == 403, read.text


def test_a_same_origin_request_is_served(router: RouterProcess) -> None:
    origin = router.admin_url
    response = httpx.post(
        f"{router.admin_url}/api/v1/replicas/r2/drain?dry_run=true",
        headers={
            "authorization": f"Bearer {router.token}",
            "origin": origin,
            "sec-fetch-site": "same-origin",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_an_oversized_admin_body_is_refused_before_it_is_read(router: RouterProcess) -> None:
    body = b'{"body": {"prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}}'
    sized = httpx.post(f"{router.admin_url}/api/v1/route/explain", content=body, timeout=30)
    assert sized.status_code == 413, sized.text
    assert sized.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = httpx.post(f"{router.admin_url}/api/v1/route/explain", content=chunks(), timeout=30)
    assert streamed.status_code == 413, streamed.text
    small = httpx.post(
        f"{router.admin_url}/api/v1/route/explain", json={"body": {"prompt": "hi"}}, timeout=10
    )
    assert small.status_code == 200, small.text
