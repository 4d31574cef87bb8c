"""Prewarm prefix files: text, JSONL and YAML, and errors that point at the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcache.operator.prefixes_file import PrefixFileError, detect_format, parse_prefixes, read_prefixes


def test_text_skips_comments_and_blank_lines_and_keeps_json_strings_with_newlines(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_text(
        "# system prompts\n\nYou are a helpful assistant.\n"
        '"You are a pirate.\\nAlways answer in rhyme."\n'
        "  # indented comment\n"
        "Tools: search, calc\n",
        encoding="utf-8",
    )
    prefixes = read_prefixes(path)
    assert [p.text for p in prefixes] == [
        "You are a helpful assistant.",
        "You are a pirate.\nAlways answer in rhyme.",
        "Tools: search, calc",
    ]
    assert all(p.name is None and p.copies is None for p in prefixes)


def test_text_error_names_file_and_line_of_a_broken_json_string(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.txt"
    path.write_text('one\ntwo\n"unterminated\n', encoding="utf-8")
    with pytest.raises(PrefixFileError) as info:
        read_prefixes(path)
    assert str(info.value).startswith(f"{path}:3: invalid JSON string:")


def test_jsonl_entries_carry_name_copies_and_replicas() -> None:
    text = (
        '{"name": "sys", "text": "You are terse.", "copies": 2}\n\n'
        '{"text": "Tools", "replicas": ["r1", "r3"]}\n'
        '"bare string"\n'
    )
    prefixes = parse_prefixes(text, "p.jsonl", "jsonl")
    assert [(p.name, p.text, p.copies, p.replicas) for p in prefixes] == [
        ("sys", "You are terse.", 2, None),
        (None, "Tools", None, ["r1", "r3"]),
        (None, "bare string", None, None),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"text": "a"}\n{"text": \n', 2, "invalid JSON"),
        ('{"text": "a"}\n{"name": "x"}\n', 2, "missing `text`"),
        ('{"text": "a", "copise": 2}\n', 1, "unknown field 'copise'"),
        ('{"text": "a", "copies": 0}\n', 1, "copies"),
        ("[1, 2]\n", 1, "expected an object"),
    ],
)
def test_jsonl_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PrefixFileError) as info:
        parse_prefixes(text, "p.jsonl", "jsonl")
    assert info.value.line == line
    assert message in info.value.message
    assert str(info.value).startswith(f"p.jsonl:{line}: ")


def test_yaml_list_or_prefixes_mapping(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.yaml"
    path.write_text(
        "prefixes:\n  - name: support\n    text: |\n      You are support.\n      Be kind.\n    copies: 2\n"
        "  - Just a string prefix\n",
        encoding="utf-8",
    )
    prefixes = read_prefixes(path)
    assert prefixes[0].name == "support"
    assert prefixes[0].text == "You are support.\nBe kind.\n"
    assert prefixes[0].copies == 2
    assert prefixes[1].text == "Just a string prefix"


def test_yaml_error_names_the_entry_line(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.yml"
    path.write_text("- text: ok\n- name: nope\n  copies: 2\n", encoding="utf-8")
    with pytest.raises(PrefixFileError) as info:
        read_prefixes(path)
    assert str(info.value) == f"{path}:2: missing `text`"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "prefixes.yaml"
    path.write_text("- text: ok\n- text: [unclosed\n", encoding="utf-8")
    with pytest.raises(PrefixFileError) as info:
        read_prefixes(path)
    assert info.value.line is not None and info.value.line >= 2
    assert "invalid YAML" in info.value.message


def test_duplicate_names_and_empty_files_are_refused() -> None:
    with pytest.raises(PrefixFileError, match="duplicate prefix name 'a'"):
        parse_prefixes('{"name": "a", "text": "x"}\n{"name": "a", "text": "y"}\n', "p.jsonl", "jsonl")
    with pytest.raises(PrefixFileError, match="no prefixes found"):
        parse_prefixes("# only comments\n\n", "p.txt", "text")


def test_missing_and_binary_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(PrefixFileError, match="no such file"):
        read_prefixes(tmp_path / "absent.txt")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PrefixFileError, match="not UTF-8"):
        read_prefixes(binary)


def test_format_follows_extension_then_content() -> None:
    assert detect_format(Path("a.yml"), "") == "yaml"
    assert detect_format(Path("a.ndjson"), "") == "jsonl"
    assert detect_format(Path("a.txt"), '{"text": "x"}') == "text"
    assert detect_format(Path("prefixes"), '\n{"text": "x"}\n') == "jsonl"
    assert detect_format(Path("prefixes"), "You are helpful.\n") == "text"


def test_the_shipped_examples_parse() -> None:
    configs = Path(__file__).parent.parent.parent / "configs"
    text = read_prefixes(configs / "prefixes.example.txt")
    assert len(text) == 2 and "\n- Point out bugs before style." in text[1].text
    yaml_prefixes = read_prefixes(configs / "prefixes.example.yaml")
    assert [(p.name, p.copies, p.replicas) for p in yaml_prefixes] == [
        ("support", 2, None),
        ("code-review", None, ["r1", "r3"]),
    ]
