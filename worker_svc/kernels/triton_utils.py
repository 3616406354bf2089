"""Small helpers shared by the Triton kernels' host wrappers."""

from __future__ import annotations

import os

import torch
import triton


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def next_pow2(n: int) -> int:
    """`tl.arange` extents must be powers of two; masks cover the padding."""
    return triton.next_power_of_2(max(int(n), 1))


def check_cache_layout(cache: torch.Tensor, num_kv_heads: int, head_dim: int) -> None:
    """A cache must be `[num_blocks, block_size, num_kv_heads, head_dim]` and contiguous, so that
    slot s starts at element `s * num_kv_heads * head_dim` (the kernels compute offsets that way)."""
    assert cache.dim() == 4, f"cache must be 4-D [blocks, block_size, kv_heads, head_dim], got {tuple(cache.shape)}"
    assert cache.shape[2] == num_kv_heads and cache.shape[3] == head_dim, (
        f"cache heads/dim {tuple(cache.shape[2:])} != ({num_kv_heads}, {head_dim})"
    )
    assert cache.is_contiguous(), "cache must be contiguous"
    block_size = cache.shape[1]
    assert block_size & (block_size - 1) == 0, f"block_size must be a power of two, got {block_size}"


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """bf16 `tl.dot` is wrong in the interpreter (triton-lang/triton#11584): upcast there."""
    return interpreting() and dtype == torch.bfloat16
