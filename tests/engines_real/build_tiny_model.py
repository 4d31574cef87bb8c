"""Build the real-engine suite's tiny model locally (no hub): a byte-level BPE tokenizer and a
random-weight Llama, run with the vLLM environment's python.

    <vllm-env>/bin/python tests/engines_real/build_tiny_model.py OUT_ROOT   # prints the model dir

The model lands in ``OUT_ROOT/tiny-llama-<hash>``, the hash being this file's content, so editing
the builder builds a new model and an unchanged one is reused. Everything is seeded: the tokenizer
is trained on a fixed, sorted list of the running Python's standard-library sources and the weights
come from ``torch.manual_seed``. Sizes are the smallest the CPU engine takes: head size 64 (its
attention kernels support only some head sizes), 2 layers, about 2k vocabulary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

VOCAB_SIZE = 2048
SPECIALS = ("<s>", "</s>", "<pad>")
# Role markers are plain text rendered by the template; BOS opens every conversation since vLLM
# tokenizes rendered chat without adding special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Standard-library modules whose sources train the tokenizer: prose (docstrings, comments) and code.
TRAINING_MODULES = (
    "argparse",
    "asyncio/base_events",
    "collections/__init__",
    "dataclasses",
    "email/message",
    "http/client",
    "inspect",
    "json/decoder",
    "logging/__init__",
    "pathlib",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "textwrap",
    "typing",
    "unittest/case",
    "urllib/parse",
    "zipfile",
)


def builder_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def training_text() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(stdlib / f"{name}.py").read_text(encoding="utf-8") for name in TRAINING_MODULES]


def build_tokenizer(out: Path) -> None:
    # tokenizers, transformers and torch come from the vLLM environment this script runs in.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, pad = SPECIALS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    bos_id = tokenizer.token_to_id(bos)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=2048
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def build_model(out: Path) -> None:
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: build_tiny_model.py OUT_ROOT")
    root = Path(sys.argv[1])
    target = root / f"tiny-llama-{builder_hash()}"
    if not (target / "model.safetensors").is_file():
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=root))
        try:
            scratch.chmod(0o755)
            build_tokenizer(scratch)
            build_model(scratch)
            try:
                os.rename(scratch, target)  # atomic: a concurrent builder's identical result may win
            except OSError:
                if not (target / "model.safetensors").is_file():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(target)


if __name__ == "__main__":
    main()
