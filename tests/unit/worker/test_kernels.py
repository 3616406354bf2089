"""Triton kernels against their torch references, run by Triton's interpreter on tiny shapes:
partial last blocks, GQA, non-contiguous (shuffled) block tables and skipped slots."""

from __future__ import annotations

import pytest
import torch

from worker_svc.kernels.paged_attention_decode import paged_attention_decode
from worker_svc.kernels.paged_attention_prefill import paged_attention_prefill
from worker_svc.kernels.reference import (
    paged_attention_decode_ref,
    paged_attention_prefill_ref,
    store_kvcache_ref,
)
from worker_svc.kernels.store_kvcache import store_kvcache

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def _block_tables(context_lens: list[int], block_size: int, num_blocks: int, gen: torch.Generator) -> torch.Tensor:
    """Disjoint, shuffled block ids per sequence (so tables are non-contiguous), padded with 0."""
    need = [(c + block_size - 1) // block_size for c in context_lens]
    ids = torch.randperm(num_blocks, generator=gen)[: sum(need)].tolist()
    table = torch.zeros(len(need), max(need), dtype=torch.int32)
    for b, n in enumerate(need):
        table[b, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        ids = ids[n:]
    return table


def _cache(num_blocks: int, block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype, gen: torch.Generator):
    k = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    v = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(dtype)
    return k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_store_kvcache_matches_reference_and_skips_minus_one(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    kv_heads, head_dim, block_size, num_blocks = 3, 8, 4, 6  # row 24: not a power of two
    key = torch.randn(5, kv_heads, head_dim, generator=gen).to(dtype)
    value = torch.randn(5, kv_heads, head_dim, generator=gen).to(dtype)
    slots = torch.tensor([17, -1, 0, 9, 23], dtype=torch.int64)
    k_ref, v_ref = _cache(num_blocks, block_size, kv_heads, head_dim, dtype, gen)
    k_tri, v_tri = k_ref.clone(), v_ref.clone()
    store_kvcache_ref(key, value, k_ref, v_ref, slots)
    store_kvcache(key, value, k_tri, v_tri, slots)
    assert torch.equal(k_tri, k_ref) and torch.equal(v_tri, v_ref)
    # The skipped token's row is nowhere in the cache; the others are where their slot says.
    assert not (k_tri.view(-1, kv_heads, head_dim) == key[1]).all(dim=(1, 2)).any()
    assert torch.equal(k_tri.view(-1, kv_heads, head_dim)[23], key[4])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (3, 3), (6, 2)])
def test_paged_decode_matches_reference(dtype: torch.dtype, heads: int, kv_heads: int) -> None:
    gen = torch.Generator().manual_seed(1)
    head_dim, block_size, num_blocks = 16, 4, 16
    context_lens = [1, 5, 8, 11]  # partial, exact and single-token contexts
    k_cache, v_cache = _cache(num_blocks, block_size, kv_heads, head_dim, dtype, gen)
    tables = _block_tables(context_lens, block_size, num_blocks, gen)
    q = torch.randn(len(context_lens), heads, head_dim, generator=gen).to(dtype)
    ctx = torch.tensor(context_lens, dtype=torch.int32)
    scale = head_dim**-0.5
    expected = paged_attention_decode_ref(q, k_cache, v_cache, tables, ctx, scale)
    got = paged_attention_decode(q, k_cache, v_cache, tables, ctx, scale)
    torch.testing.assert_close(got.float(), expected.float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_paged_prefill_matches_reference_with_prefix_and_gqa(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    heads, kv_heads, head_dim, block_size, num_blocks = 4, 2, 16, 4, 24
    num_computed = [0, 6, 3]  # a first chunk, a later chunk after a partial block, a short chunk
    query_lens = [7, 18, 2]  # 18 spans two 16-query tiles
    context_lens = [c + q for c, q in zip(num_computed, query_lens)]
    k_cache, v_cache = _cache(num_blocks, block_size, kv_heads, head_dim, dtype, gen)
    tables = _block_tables(context_lens, block_size, num_blocks, gen)
    qsl = torch.tensor([0, 7, 25, 27], dtype=torch.int32)
    q = torch.randn(27, heads, head_dim, generator=gen).to(dtype)
    computed = torch.tensor(num_computed, dtype=torch.int32)
    scale = head_dim**-0.5
    expected = paged_attention_prefill_ref(q, k_cache, v_cache, tables, qsl, computed, scale)
    got = paged_attention_prefill(q, k_cache, v_cache, tables, qsl, computed, max(query_lens), scale)
    torch.testing.assert_close(got.float(), expected.float(), atol=TOL[dtype], rtol=TOL[dtype])
