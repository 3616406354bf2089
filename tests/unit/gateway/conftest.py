"""Tokenizers for the gateway core tests: a tiny byte-level BPE trained in-process (fast) and the
real SmolLM2 tokenizer (about 8 s to load, so shared by the whole session)."""

from __future__ import annotations

from typing import Any

import pytest

CORPUS = [
    "hello world, the quick brown fox jumps over the lazy dog.",
    "héllo wörld: naïve café, déjà vu, smörgåsbord.",
    "世界 你好 日本語 テキスト 🎉 🚀 emoji and text mixed",
    "STOP here. The end. ### Answer: 42\n\nUser: hi\nAssistant: hello",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tiny_tokenizer(with_chat_template: bool = True) -> Any:
    """A byte-level BPE (the SmolLM2/GPT-2 scheme) with a 300-token vocabulary, so most non-ASCII
    characters span several tokens. Wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    if with_chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    return train_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_no_template() -> Any:
    return train_tiny_tokenizer(with_chat_template=False)


@pytest.fixture(scope="session")
def smol_tokenizer() -> Any:
    from llmserve.model_source import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("default"))
