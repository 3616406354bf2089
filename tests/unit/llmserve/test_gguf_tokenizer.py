"""The torch-free GGUF tokenizer (llmserve.gguf_tokenizer) is the tokenizer transformers' own GGUF
loader builds: the same ids, text, special tokens and chat template for the bundled model."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from llmserve.gguf_tokenizer import load_gguf_tokenizer
from llmserve.model_source import default_gguf_path

TEXTS = [
    "The capital of France is",
    "  leading spaces,\ttabs\n\nand new lines",
    "ünïcödé, 日本語, emoji 🙂 and code: def f(x): return x**2",
    "<|im_start|>user\nspecial tokens inline<|im_end|>",
    "",
]
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]


@pytest.fixture(scope="module")
def pair():
    path = default_gguf_path()
    reference = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    return load_gguf_tokenizer(path), reference


def test_same_ids_and_text(pair) -> None:
    ours, reference = pair
    for text in TEXTS:
        ids = reference.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


def test_same_special_tokens_and_chat_template(pair) -> None:
    ours, reference = pair
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "vocab_size"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert len(ours) == len(reference)
    assert ours.chat_template == reference.chat_template
    for prompt in (False, True):
        rendered = reference.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=prompt)
        assert ours.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=prompt) == rendered
