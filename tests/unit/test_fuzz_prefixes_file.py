"""Hostile prefixes files (text, JSONL, YAML): prefixes or a PrefixFileError naming the file and line.

Random text in every format, random JSON per JSONL line, random YAML structures, one bad entry at a
known line among good ones, and the shapes that used to escape untyped (repeated ``prefixes:`` keys,
non-string keys, nesting deeper than the parsers' recursion).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pcache.api import PrewarmPrefix
from pcache.operator.prefixes_file import PrefixFileError, parse_prefixes, read_prefixes

SOURCE = "prefixes.txt"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = st.sampled_from(["text", "jsonl", "yaml"])

any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=30)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "text": any_text | scalars,
        "name": any_text | scalars,
        "copies": st.integers(-2, 2000) | scalars,
        "replicas": st.lists(any_text, max_size=2) | scalars,
        "extra": scalars,
    },
)
yaml_keys = st.text(max_size=8) | st.integers() | st.none() | st.booleans()
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=3),
    max_leaves=10,
)


def _prefixes_or_located_error(text: str, fmt: Any) -> list[PrewarmPrefix] | None:
    try:
        prefixes = parse_prefixes(text, source=SOURCE, fmt=fmt)
    except PrefixFileError as exc:
        assert str(exc).startswith(f"{SOURCE}:") or str(exc).startswith(f"{SOURCE} "), str(exc)
        assert "\n" not in f"{exc.source}:{exc.line}", str(exc)
        if exc.line is not None:
            assert 1 <= exc.line <= max(1, len(text.splitlines())), (exc.line, text)
        return None
    assert prefixes and all(isinstance(p, PrewarmPrefix) and p.text for p in prefixes)
    return prefixes


@FUZZ
@given(text=st.text(max_size=300), fmt=FORMATS)
@example(text="prefixes:\n  - a\nprefixes:\n  - b\n  - c\n  - d\n", fmt="yaml")
@example(text="- {1: a, b: c}\n", fmt="yaml")
@example(text="[" * 1200 + "]" * 1200, fmt="yaml")
@example(text="[" * 1200 + "]" * 1200, fmt="jsonl")
@example(text='"\\ud800 lone surrogate"\n', fmt="text")
@example(text='{"text": "\\udfff"}\n', fmt="jsonl")
@example(text="- !!python/object/apply:os.system ['true']\n", fmt="yaml")
def test_random_text_in_any_format_is_prefixes_or_a_located_error(text: str, fmt: Any) -> None:
    _prefixes_or_located_error(text, fmt)


@FUZZ
@given(lines=st.lists(entries | json_values, min_size=1, max_size=5))
def test_random_jsonl_lines_are_prefixes_or_a_located_error(lines: list[Any]) -> None:
    _prefixes_or_located_error("\n".join(json.dumps(line) for line in lines), "jsonl")


@FUZZ
@given(
    document=yaml_values | st.lists(entries, max_size=4) | st.fixed_dictionaries({"prefixes": yaml_values})
)
def test_random_yaml_documents_are_prefixes_or_a_located_error(document: Any) -> None:
    _prefixes_or_located_error(yaml.safe_dump(document), "yaml")


BAD_ENTRIES = [
    ({"text": "ok", "copies": 0}, "copies"),
    ({"text": "ok", "colour": "red"}, "unknown field 'colour'"),
    ({"name": "no text"}, "missing `text`"),
    ({"text": ""}, "text"),
    ({"text": 7}, "text"),
]


@FUZZ
@given(
    before=st.integers(0, 6),
    blank=st.integers(0, 2),
    bad=st.sampled_from(BAD_ENTRIES),
    fmt=st.sampled_from(["jsonl", "yaml"]),
)
def test_one_bad_entry_among_good_ones_is_reported_at_its_line(
    before: int, blank: int, bad: tuple[dict[str, Any], str], fmt: str
) -> None:
    good = [{"text": f"You are assistant {i}."} for i in range(before)]
    entry, expected = bad
    if fmt == "jsonl":
        text = (
            "\n".join(json.dumps(e) for e in good) + "\n" * (blank + (1 if good else 0)) + json.dumps(entry)
        )
        line = before + blank + 1
    else:
        text = "\n" * blank + yaml.safe_dump([*good, entry], default_flow_style=True, width=10**6).replace(
            "}, {", "},\n {"
        )
        line = blank + before + 1
    with pytest.raises(PrefixFileError) as failure:
        parse_prefixes(text, source=SOURCE, fmt=fmt)  # type: ignore[arg-type]
    assert failure.value.line == line, (str(failure.value), text)
    assert str(failure.value).startswith(f"{SOURCE}:{line}: ")
    assert expected in failure.value.message


@FUZZ
@given(before=st.integers(0, 5), bad=st.sampled_from(['"unterminated', '"a" "b"', '""']))
def test_a_bad_quoted_line_in_a_text_file_is_reported_at_its_line(before: int, bad: str) -> None:
    text = "\n".join([*(f"prefix number {i}" for i in range(before)), "# a comment", bad, "last one"])
    with pytest.raises(PrefixFileError) as failure:
        parse_prefixes(text, source=SOURCE, fmt="text")
    assert failure.value.line == before + 2


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        pytest.param("prefixes:\n  - a\nprefixes:\n  - b\n  - c\n  - d\n", "yaml", None, id="repeated-key"),
        pytest.param("- {1: a, text: b}\n", "yaml", "unknown field 1", id="int-key"),
        pytest.param("[" * 1200 + "]" * 1200, "yaml", "nested too deeply", id="deep-yaml"),
        pytest.param("[" * 1200 + "]" * 1200, "jsonl", "nested too deeply", id="deep-jsonl"),
    ],
)
def test_shapes_that_escaped_untyped_now_parse_or_raise_prefix_file_error(
    text: str, fmt: Any, message: str | None
) -> None:
    """Regression (found by this file): IndexError on a repeated ``prefixes:`` key, TypeError
    sorting non-string keys, RecursionError on deep YAML or JSONL."""
    if message is None:
        assert [p.text for p in parse_prefixes(text, source=SOURCE, fmt=fmt)] == ["b", "c", "d"]
    else:
        with pytest.raises(PrefixFileError, match=message):
            parse_prefixes(text, source=SOURCE, fmt=fmt)


def test_a_file_that_is_not_utf8_is_a_prefix_file_error(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_bytes(b"You are \xff a bot\n")
    with pytest.raises(PrefixFileError, match="not UTF-8"):
        read_prefixes(path)
