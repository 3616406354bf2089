"""Shared vocabulary of every llmserve service (pure: stdlib only)."""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints: blocks needed for `a` tokens at `b` per block."""
    return -(-a // b)


def is_decode(start: int, num_tokens: int, num_prompt_tokens: int) -> bool:
    """The one decode rule: a chunk is a decode iff it computes exactly one token at or past the
    prompt's end (a one-token prefill chunk is prefill work)."""
    return num_tokens == 1 and start >= num_prompt_tokens
