"""``router check-config``, ``config check`` and ``serve`` refuse the same configs, naming the line.

Issue 18 item 13 (and issue 13/17's check-config bars): ``check-config`` passed 11 configs that
``serve`` rejected; duplicate YAML keys, duplicate replica URLs and a ``health.path`` without its
leading slash (every replica then unhealthy) were accepted by both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pcache_cli.main import app

GOOD = """\
replicas:
  - {name: r1, url: "http://127.0.0.1:9001"}
  - {name: r2, url: "http://127.0.0.1:9002"}
"""

BAD = {
    "policy_name": (GOOD + "policy:\n  name: tierd\n", 5, "unknown policy 'tierd'; did you mean 'tiered'?"),
    "policy_param": (
        GOOD + "policy:\n  name: tiered\n  params:\n    epss: 0.5\n",
        7,
        "tiered has no parameter 'epss'; did you mean 'eps'?",
    ),
    "tier1_file": (GOOD + "tier1:\n  - {name: shop, file: missing.txt}\n", 5, "cannot read"),
    "duplicate_key": (GOOD + "listen: 127.0.0.1:8080\nlisten: 127.0.0.1:8090\n", 5, "duplicate key 'listen'"),
    "duplicate_url": (
        GOOD + '  - {name: r3, url: "http://127.0.0.1:9001/"}\n',
        4,
        "is already replica 'r1'",
    ),
    "health_path": (GOOD + "health:\n  path: health\n", 5, "must be an absolute path"),
    "blank_token": (
        GOOD + "admin:\n  token_env: PCACHE_CHECK_TOKEN\n",
        5,
        "the admin token from $PCACHE_CHECK_TOKEN is blank",
    ),
}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"PCACHE_CHECK_TOKEN": "   ", "NO_COLOR": "1"})
    return result.exit_code, result.stderr


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_checker_refuses_the_config_naming_its_line(tmp_path: Path, case: str) -> None:
    text, line, message = BAD[case]
    path = tmp_path / "router.yaml"
    path.write_text(text)
    for command in (["router", "check-config", "-c", str(path)], ["config", "check", str(path)]):
        code, stderr = _run(*command)
        assert code == 2, f"{command}: exit {code}\n{stderr}"
        assert f"{path}:{line}: " in stderr and message in stderr, f"{command}:\n{stderr}"
    code, stderr = _run("router", "serve", "-c", str(path))
    assert code == 2 and message in stderr, f"serve: exit {code}\n{stderr}"


def test_a_good_config_passes_both_checkers(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(GOOD)
    assert _run("router", "check-config", "-c", str(path))[0] == 0
    assert _run("config", "check", str(path))[0] == 0
