"""`configs/demo/` is what `pcache demo` runs, written out for people who start the pieces by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pcache.demo import DemoFleet, fleet_document, router_document
from pcache.workload import default_prompts

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"


def test_fleet_yaml_is_the_demo_fleet() -> None:
    assert yaml.safe_load((DEMO / "fleet.yaml").read_text()) == fleet_document(DemoFleet())


def test_prompt_files_are_the_built_in_prompts() -> None:
    prompts = default_prompts()
    assert sorted(path.stem for path in (DEMO / "prompts").glob("*.txt")) == sorted(p.name for p in prompts)
    for prompt in prompts:
        assert (DEMO / "prompts" / f"{prompt.name}.txt").read_text(encoding="utf-8") == prompt.text


def test_router_yaml_matches_the_demo_router_on_fixed_ports() -> None:
    document = yaml.safe_load((DEMO / "router.yaml").read_text())
    urls = {f"r{index}": f"http://127.0.0.1:{8100 + index}" for index in range(1, 10)}
    expected = router_document(
        DemoFleet(), urls, default_prompts(), listen="127.0.0.1:8080", admin_listen="127.0.0.1:8081"
    )
    expected["admin"]["token_env"] = "PCACHE_ADMIN_TOKEN"
    assert document == expected


@pytest.mark.integration
def test_router_accepts_the_demo_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pcache_cli.main", "router", "check-config", "-c", str(DEMO / "router.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "8 replicas, 6 Tier-1 prefixes, policy tiered" in result.stdout
