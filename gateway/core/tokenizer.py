"""The slice of a Hugging Face tokenizer that the core uses, as a Protocol (the core never
imports transformers; the server passes the loaded tokenizer in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Tokenizer(Protocol):
    """Satisfied by transformers' fast tokenizers and by `tokenizers`-backed test doubles."""

    chat_template: Any

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...
