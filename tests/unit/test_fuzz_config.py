"""Hostile router configs: the loader returns a config or raises ConfigError naming the file and line.

Random text, random YAML documents over the real schema's keys, one known-bad field at a known
line, invalid UTF-8 and nesting deeper than pyyaml's recursive composer can take.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pcache.router.config import ConfigError, RouterConfig, load_config, parse_config

SOURCE = "router.yaml"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINE = re.compile(rf"^{re.escape(SOURCE)}(:(\d+))?: ")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["127.0.0.1:8080", "http://127.0.0.1:9", "tiered", "chat", "r1", "-1", "0"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
)
SECTION_KEYS = {
    "admin": ["listen", "token_env", "auth_reads"],
    "policy": ["name", "params"],
    "health": ["path", "interval_s", "timeout_s", "failures", "recoveries"],
    "scrape": ["interval_s", "timeout_s", "stale_after_s"],
    "upstream": [
        "client",
        "connect_timeout_s",
        "read_timeout_s",
        "retries",
        "max_connections",
        "max_body_bytes",
    ],
    "prewarm": ["concurrency", "timeout_s", "model"],
    "hot_prefixes": ["min_sessions", "auto_promote"],
}
replica = st.fixed_dictionaries(
    {"name": st.sampled_from(["r1", "r2", "bad name", ""]) | scalars, "url": scalars},
    optional={
        "engine": st.sampled_from(["auto", "vllm", "nope"]) | scalars,
        "weight": scalars,
        "group": scalars,
    },
)
tier1 = st.fixed_dictionaries(
    {"name": st.sampled_from(["bot", "bot"]) | scalars},
    optional={"text": scalars, "file": scalars, "as": scalars, "copies": scalars, "replicas": values},
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "listen": scalars,
        "state": st.just("memory://") | scalars,
        "log_level": st.sampled_from(["info", "debug", "loud"]) | scalars,
        "fingerprint": values,
        "replicas": st.lists(replica, max_size=3) | values,
        "tier1": st.lists(tier1, max_size=2) | values,
        "unknown_key": values,
        **{
            section: st.fixed_dictionaries({}, optional=dict.fromkeys(keys, scalars)) | values
            for section, keys in SECTION_KEYS.items()
        },
    },
)


def _parsed_or_located_error(text: str) -> RouterConfig | None:
    try:
        return parse_config(text, source=SOURCE)
    except ConfigError as exc:
        lines = max(1, len(text.splitlines()))
        for message in str(exc).splitlines():
            match = LINE.match(message)
            assert match, f"error line does not start with the file name: {message!r}"
            if match.group(2) is not None:
                assert 1 <= int(match.group(2)) <= lines + 1, message
        return None


@FUZZ
@given(text=st.text(max_size=300))
@example(text="a: " + "[" * 1200 + "]" * 1200)  # deeper than pyyaml's recursive composer can go
@example(text="listen: !!python/object/apply:os.system ['true']")
@example(text="\t- x")
@example(text="a: 1\nb: \x1f")  # regression: the error spanned two lines, the second without file:line
@example(text='hot_prefixes:\n  "\\r": 1\n')  # regression: a key with CR split the error line
def test_random_text_is_a_config_or_a_config_error_with_the_file_name(text: str) -> None:
    _parsed_or_located_error(text)


@FUZZ
@given(document=documents)
def test_random_documents_over_the_schema_keys_are_configs_or_located_errors(
    document: dict[str, Any],
) -> None:
    config = _parsed_or_located_error(yaml.safe_dump(document, sort_keys=False))
    if config is not None:
        assert config.state == document.get("state", "memory://") or "state" in document


BAD_FIELDS = [
    (("upstream", "retries"), -1, "upstream.retries"),
    (("upstream", "client"), "curl", "upstream.client"),
    (("health", "failures"), 0, "health.failures"),
    (("admin", "listen"), "nowhere", "admin.listen"),
    (("policy", "name"), 7, "policy.name"),
    (("replicas", 1, "url"), "ftp://x", "replicas[1].url"),
    (("replicas", 0, "name"), "has space", "replicas[0].name"),
    (("replicas", 1, "weight"), 0, "replicas[1].weight"),
    (("tier1", 0, "copies"), 0, "tier1[0].copies"),
    (("tier1", 0, "as"), "poem", "tier1[0].as"),
]


def _valid_document() -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:8080",
        "admin": {"listen": "127.0.0.1:8081"},
        "policy": {"name": "tiered"},
        "replicas": [
            {"name": "r1", "url": "http://127.0.0.1:8101"},
            {"name": "r2", "url": "http://127.0.0.1:8102"},
        ],
        "tier1": [{"name": "bot", "text": "You are a bot.", "copies": 1}],
        "health": {"failures": 3},
        "upstream": {"retries": 2, "client": "httpx"},
        "state": "memory://",
    }


@FUZZ
@given(bad=st.sampled_from(BAD_FIELDS), padding=st.integers(0, 5))
def test_one_bad_field_is_reported_with_its_path_and_line(
    bad: tuple[tuple[str | int, ...], object, str], padding: int
) -> None:
    path, value, dotted = bad
    document = _valid_document()
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    text = "# comment\n" * padding + yaml.safe_dump(document, sort_keys=False)
    with pytest.raises(ConfigError) as failure:
        parse_config(text, source=SOURCE)
    message = str(failure.value)
    match = re.search(rf"{re.escape(SOURCE)}:(\d+): {re.escape(dotted)}: ", message)
    assert match, message
    line = text.splitlines()[int(match.group(1)) - 1]
    assert line.lstrip(" -").startswith(f"{path[-1]}:"), (line, message)


def test_nesting_deeper_than_pyyaml_can_compose_is_a_config_error() -> None:
    """Regression: pyyaml's recursive composer raised RecursionError through parse_config."""
    with pytest.raises(ConfigError, match=r"^router\.yaml: invalid YAML: nested too deeply"):
        parse_config("fingerprint: " + "[" * 1200 + "]" * 1200, source=SOURCE)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Regression: load_config let UnicodeDecodeError escape."""
    path = tmp_path / "router.yaml"
    path.write_bytes(b"listen: \xff\xfe:8080\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
