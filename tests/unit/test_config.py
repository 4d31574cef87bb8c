"""Router config: defaults, validation, and errors that name the field and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcache.router.config import ConfigError, is_loopback, load_config, parse_config, split_host_port
from pcache.router.security import configured_admin_token

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "router.yaml"


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert [r.name for r in config.replicas] == ["r1", "r2", "r3", "r4"]
    assert config.policy.name == "tiered"
    assert config.tier1[0].name == "support-bot" and config.tier1[0].copies == 2
    assert config.admin.token_env == "PCACHE_ADMIN_TOKEN"


def test_an_empty_file_gives_defaults() -> None:
    config = parse_config("")
    assert config.listen == "127.0.0.1:8080"
    assert config.admin.listen == "127.0.0.1:8081"
    assert config.upstream.retries == 2
    assert config.state == "memory://"


def test_errors_name_the_field_and_its_line() -> None:
    text = (
        "listen: 127.0.0.1:8080\nreplicas:\n  - name: r1\n    url: ftp://nope\n"
        "  - name: r2\n    url: http://x\n    wieght: 2\n"
    )
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="router.yaml")
    lines = str(error.value).splitlines()
    assert "router.yaml:4: replicas[0].url: must start with http:// or https://" in lines
    assert any(line.startswith("router.yaml:7: replicas[1].wieght:") for line in lines)


def test_invalid_yaml_reports_its_line() -> None:
    with pytest.raises(ConfigError, match=r"router.yaml:2: invalid YAML"):
        parse_config("listen: a\n  bad: [\n", source="router.yaml")


def test_duplicate_replicas_and_unknown_pins_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate replica names: r1"):
        parse_config("replicas:\n  - {name: r1, url: 'http://a'}\n  - {name: r1, url: 'http://b'}\n")
    with pytest.raises(ConfigError, match="pins unknown replicas: r9"):
        parse_config(
            "replicas:\n  - {name: r1, url: 'http://a'}\ntier1:\n  - {name: p, text: hello, replicas: [r9]}\n"
        )


def test_a_tier1_prefix_needs_exactly_one_of_text_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":2: tier1\[0\]: give exactly one of text or file"):
        parse_config("tier1:\n  - {name: p}\n", source="c.yaml")
    (tmp_path / "prompt.txt").write_text("a shared system prompt")
    (tmp_path / "router.yaml").write_text("tier1:\n  - {name: p, file: prompt.txt, as: completion}\n")
    config = load_config(tmp_path / "router.yaml")
    assert config.tier1_text(config.tier1[0]) == "a shared system prompt"
    assert config.tier1[0].as_ == "completion"


def test_a_missing_tier1_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "router.yaml").write_text("tier1:\n  - {name: p, file: missing.txt}\n")
    config = load_config(tmp_path / "router.yaml")
    with pytest.raises(ConfigError, match=r"tier1 'p': cannot read .*missing\.txt"):
        config.tier1_text(config.tier1[0])


def test_relative_state_paths_resolve_against_the_config(tmp_path: Path) -> None:
    (tmp_path / "router.yaml").write_text("state: state/router.sqlite\n")
    assert load_config(tmp_path / "router.yaml").state_location() == str(tmp_path / "state" / "router.sqlite")
    assert parse_config("state: memory://\n").state_location() == "memory://"


def test_admin_token_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config("admin: {token_env: MY_TOKEN}\n")
    monkeypatch.delenv("MY_TOKEN", raising=False)
    assert configured_admin_token(config) is None
    monkeypatch.setenv("MY_TOKEN", "s3cret-long-enough")
    assert configured_admin_token(config) == "s3cret-long-enough"


@pytest.mark.parametrize("value", ["", "   ", "s3cret", " padded-token-value-here "])
def test_a_blank_or_short_admin_token_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    config = parse_config("admin: {token_env: MY_TOKEN}\n")
    monkeypatch.setenv("MY_TOKEN", value)
    with pytest.raises(ConfigError, match=r"admin.token_env: the admin token from \$MY_TOKEN"):
        configured_admin_token(config)


def test_addresses() -> None:
    assert split_host_port("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_host_port("[::1]:8081") == ("::1", 8081)
    with pytest.raises(ValueError):
        split_host_port("localhost")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    with pytest.raises(ConfigError, match="listen"):
        parse_config("listen: nowhere\n")
