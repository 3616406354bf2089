"""Triton kernel: write the K/V rows of a step's tokens into the paged cache by slot mapping."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker_svc.kernels.triton_utils import check_cache_layout, next_pow2


@triton.jit
def _store_kvcache_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_ptr,
    key_stride,  # elements between two tokens of `key`
    value_stride,
    ROW: tl.constexpr,  # num_kv_heads * head_dim: one token's row
    BLOCK: tl.constexpr,  # ROW rounded up to a power of two
):
    # One program per token.
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t)
    if slot < 0:  # padded or skipped token
        return
    cols = tl.arange(0, BLOCK)
    mask = cols < ROW
    k = tl.load(key_ptr + t * key_stride + cols, mask=mask)
    v = tl.load(value_ptr + t * value_stride + cols, mask=mask)
    tl.store(k_cache_ptr + slot * ROW + cols, k, mask=mask)
    tl.store(v_cache_ptr + slot * ROW + cols, v, mask=mask)


def store_kvcache(
    key: torch.Tensor,  # [T, Hkv, D]
    value: torch.Tensor,  # [T, Hkv, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,  # [N, bs, Hkv, D]
    slot_mapping: torch.Tensor,  # [T] int, -1 = skip
) -> None:
    """In place: `cache[slot] = row` for each token whose slot is not -1."""
    num_tokens, num_kv_heads, head_dim = key.shape
    assert value.shape == key.shape, f"value {tuple(value.shape)} != key {tuple(key.shape)}"
    # Each token's row must be dense (heads then dims) so one stride walks tokens.
    for name, t in (("key", key), ("value", value)):
        assert t.stride(2) == 1 and t.stride(1) == head_dim, f"{name} rows must be dense, strides {t.stride()}"
    check_cache_layout(k_cache, num_kv_heads, head_dim)
    check_cache_layout(v_cache, num_kv_heads, head_dim)
    assert k_cache.dtype == key.dtype == v_cache.dtype == value.dtype, "cache and K/V dtypes differ"
    assert slot_mapping.shape == (num_tokens,), f"slot_mapping {tuple(slot_mapping.shape)} != ({num_tokens},)"
    if num_tokens == 0:
        return
    row = num_kv_heads * head_dim
    _store_kvcache_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping.contiguous(),
        key.stride(0), value.stride(0),
        ROW=row, BLOCK=next_pow2(row),
    )
