"""Prompt tokenization, with the model's chat template when the request asks for it."""

from __future__ import annotations

from collections.abc import Sequence

from llmserve.errors import InvalidRequestError

from gateway.core.tokenizer import Tokenizer
from gateway.core.types import ChatMessage


def has_chat_template(tokenizer: Tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def tokenize_prompt(tokenizer: Tokenizer, text: str, apply_chat_template: bool, model_name: str = "the model") -> list[int]:
    """Token ids of `text`. With `apply_chat_template`, `text` is one user message rendered with the
    tokenizer's chat template (generation prompt appended); the template already carries the special
    tokens, so none are added on top."""
    if not apply_chat_template:
        return list(tokenizer.encode(text))
    if not has_chat_template(tokenizer):
        raise InvalidRequestError(
            f"apply_chat_template is set but {model_name} has no chat template: "
            "send the prompt with apply_chat_template=false (formatted yourself)"
        )
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer.encode(rendered, add_special_tokens=False))


def tokenize_messages(tokenizer: Tokenizer, messages: Sequence[ChatMessage],
                      model_name: str = "the model") -> list[int]:
    """Token ids of a conversation rendered with the tokenizer's chat template, the generation
    prompt appended (OpenAI chat completions)."""
    if not has_chat_template(tokenizer):
        raise InvalidRequestError(
            f"{model_name} has no chat template: use /v1/completions with a prompt formatted yourself"
        )
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    try:
        rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # noqa: BLE001 - a template that rejects the conversation (role order, ...) is bad input
        raise InvalidRequestError(f"the chat template of {model_name} rejects these messages: {err}") from None
    return list(tokenizer.encode(rendered, add_special_tokens=False))
