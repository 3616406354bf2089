"""Chat template application and the running-request registry."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.chat import has_chat_template, tokenize_prompt
from gateway.core.registry import RequestRegistry
from llmserve.errors import CapacityError, ConflictError, InvalidRequestError


def test_chat_template_wraps_text_as_one_user_message(tiny_tokenizer: Any) -> None:
    ids = tokenize_prompt(tiny_tokenizer, "hi there", apply_chat_template=True)
    assert tiny_tokenizer.decode(ids) == "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_plain_text_is_not_templated(tiny_tokenizer: Any) -> None:
    assert tokenize_prompt(tiny_tokenizer, "hi there", apply_chat_template=False) == tiny_tokenizer.encode("hi there")


def test_missing_chat_template_is_an_invalid_request(tiny_tokenizer_no_template: Any) -> None:
    assert not has_chat_template(tiny_tokenizer_no_template)
    with pytest.raises(InvalidRequestError, match="tiny has no chat template: send the prompt with apply_chat_template=false"):
        tokenize_prompt(tiny_tokenizer_no_template, "hi", apply_chat_template=True, model_name="tiny")


def test_smollm2_chat_template(smol_tokenizer: Any) -> None:
    ids = tokenize_prompt(smol_tokenizer, "What is 2+2?", apply_chat_template=True)
    text = smol_tokenizer.decode(ids)
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert ids.count(smol_tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant


def test_registry_rejects_duplicates_and_enforces_the_limit() -> None:
    reg: RequestRegistry[str] = RequestRegistry(max_running=3)
    reg.admit(("", "a"), "handle-a")
    with pytest.raises(ConflictError, match="'a' is already running"):
        reg.admit(("", "a"), "again")
    reg.admit(("tenant-b", "a"), "b's a")  # the same id in another tenant's scope is another request
    with pytest.raises(CapacityError, match="limit of 3 concurrent requests") as refused:
        reg.admit(("", "b"), "handle-b")
        reg.admit(("", "c"), "handle-c")
    assert refused.value.retry_after_s == 1.0
    assert reg.get(("", "a")) == "handle-a" and reg.get(("tenant-b", "a")) == "b's a" and len(reg) == 3
    reg.release(("", "a"))
    reg.release(("", "unknown"))
    reg.admit(("", "c"), "handle-c")
    assert reg.get(("", "a")) is None and len(reg) == 3
