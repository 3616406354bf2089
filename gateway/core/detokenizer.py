"""Incremental detokenization for byte-level BPE (and SentencePiece) tokenizers.

Decoding each new token on its own is wrong twice over: a multi-byte UTF-8 character split across
tokens decodes to U+FFFD, and tokenizers that strip or merge spaces at the start of a text decode a
lone token differently from the same token in context. So we keep two offsets into the token list:

    tokens:  [ ... | prefix_offset ........ read_offset ........ len ]
                     `--- already emitted ---'`--- not yet ---'

and decode the window tokens[prefix_offset:] against tokens[prefix_offset:read_offset]. The new text
is the difference; it is emitted only when it does not end in U+FFFD (an incomplete character), and
then the window slides forward. The window starts with a few prompt tokens for context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.core.tokenizer import Tokenizer

# Prompt tokens kept as decoding context: enough for any leading-space rule, small enough to be cheap.
PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


@dataclass(slots=True)
class IncrementalDetokenizer:
    """Feed output token ids as they arrive; get the text they add. Joined, the deltas plus
    `flush()` equal `tokenizer.decode(output_ids, skip_special_tokens=True)`."""

    tokenizer: Tokenizer
    tokens: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0
    skip_special_tokens: bool = True

    @classmethod
    def for_prompt(cls, tokenizer: Tokenizer, prompt_ids: Sequence[int]) -> IncrementalDetokenizer:
        context = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:])
        if tokenizer.decode(context, skip_special_tokens=True).endswith(_REPLACEMENT):
            # A prompt that ends inside a character (token ids sent by the client) is no context:
            # the first output tokens would complete that character into the prompt's text.
            context = []
        return cls(tokenizer=tokenizer, tokens=context, prefix_offset=0, read_offset=len(context))

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_ids: Sequence[int]) -> str:
        """The text completed by `token_ids` (empty while a character is incomplete)."""
        self.tokens.extend(token_ids)
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        # NOTE: the window decodes to prefix_text + delta for byte-level BPE, since the window
        # starts at a character boundary; slicing by length is what vLLM does as well.
        delta = new_text[len(prefix_text) :]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.tokens)
        return delta

    def flush(self) -> str:
        """At the end of the stream: whatever is still held (an incomplete character decodes to
        U+FFFD, as a full decode of the output would)."""
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.tokens)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
