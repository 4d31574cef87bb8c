"""`pcache drain` as an SRE types it: global flags after the subcommand, and a dry run with no token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pcache_cli.main import app
from tests.harness.router import RouterProcess
from tests.harness.sim import SimFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    with (
        SimFleet(replicas=2) as sim,
        RouterProcess(replicas=dict(sim.urls), state_dir=tmp_path_factory.mktemp("router")) as process,
    ):
        yield process


def _run(tmp_path: Path, *args: str) -> Result:
    """The CLI with nothing from the environment: no router URL, no token, no config file."""
    env = {
        "PCACHE_ROUTER": "",
        "PCACHE_ADMIN_TOKEN": "",
        "PCACHE_CONFIG": "",
        "PCACHE_OUTPUT": "",
        "XDG_CONFIG_HOME": str(tmp_path),
        "NO_COLOR": "1",
    }
    return CliRunner().invoke(app, list(args), env=env)


def test_drain_dry_run_needs_no_token(router: RouterProcess, tmp_path: Path) -> None:
    result = _run(tmp_path, "drain", "r1", "--dry-run", "--router", router.admin_url, "-o", "json")
    assert result.exit_code == 0, result.output
    radius = json.loads(result.stdout)
    assert radius["replica"] == "r1"
    assert radius["dry_run"] is True
    with router.admin() as admin:
        assert next(r for r in admin.replicas() if r.name == "r1").state == "healthy"


def test_drain_takes_token_and_router_after_the_subcommand(router: RouterProcess, tmp_path: Path) -> None:
    assert router.token
    result = _run(tmp_path, "drain", "r2", "--token", router.token, "--router", router.admin_url, "--yes")
    try:
        assert result.exit_code == 0, result.output
        with router.admin() as admin:
            assert next(r for r in admin.replicas() if r.name == "r2").state in ("draining", "drained")
    finally:
        with router.admin() as admin:
            admin.undrain("r2")


def test_a_drain_without_the_token_is_refused_with_one_error_line(
    router: RouterProcess, tmp_path: Path
) -> None:
    result = _run(tmp_path, "drain", "r2", "--router", router.admin_url, "--yes")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unauthorized" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
