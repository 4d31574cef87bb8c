"""The router's own tokenization equals transformers' for the tiny model's template and two written
here (reference ids produced by transformers itself; see tests/fixtures/PROVENANCE.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pcache.kv.local_tokenizer import LocalTokenizer, TokenizerError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tiny-llama-tokenizer"
REFERENCE = json.loads((FIXTURE / "transformers_reference.json").read_text(encoding="utf-8"))


def with_template(tmp_path: Path, template: str) -> LocalTokenizer:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    shutil.copy(FIXTURE / template, tmp_path / "chat_template.jinja")
    return LocalTokenizer(tmp_path)


@pytest.mark.parametrize("case", REFERENCE["chat"], ids=lambda c: f"{c['template']}-{len(c['messages'])}")
def test_chat_token_ids_equal_transformers_apply_chat_template(case: dict[str, Any], tmp_path: Path) -> None:
    tokenizer = with_template(tmp_path, case["template"])
    tokens = tokenizer.tokens({"model": "tiny-llama", "messages": case["messages"]})
    assert tokens is not None and list(tokens.token_ids) == case["token_ids"]


@pytest.mark.parametrize("case", REFERENCE["completion"], ids=lambda c: c["prompt"][:12])
def test_completion_token_ids_equal_transformers_with_special_tokens(case: dict[str, Any]) -> None:
    tokens = LocalTokenizer(FIXTURE).tokens({"prompt": case["prompt"]})
    assert tokens is not None and list(tokens.token_ids) == case["token_ids"]


def test_text_parts_are_joined_like_vllms_string_content_format() -> None:
    tokenizer = LocalTokenizer(FIXTURE)
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    as_parts = tokenizer.tokens({"messages": [{"role": "user", "content": parts}]})
    as_text = tokenizer.tokens({"messages": [{"role": "user", "content": "one\ntwo"}]})
    assert as_parts is not None and as_text is not None and as_parts.token_ids == as_text.token_ids


def test_a_template_that_raises_is_a_tokenizer_error(tmp_path: Path) -> None:
    tokenizer = with_template(tmp_path, "inst.jinja")
    with pytest.raises(TokenizerError, match="alternate"):
        tokenizer.tokens({"messages": [{"role": "assistant", "content": "first"}]})


def test_token_id_prompts_pass_through_and_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    tokens = LocalTokenizer(FIXTURE).tokens({"prompt": [5, 6, 7]})
    assert tokens is not None and tokens.token_ids == (5, 6, 7)
    with pytest.raises(TokenizerError, match="cannot load"):
        LocalTokenizer(tmp_path / "nothing")
