"""Triton kernel: paged attention for decodes (one query token per sequence).

One program per (sequence, KV head): it loads the GROUP query heads that share the KV head (the
rows of a tl.dot, padded to 16 on a GPU), walks the context in tiles of TILE_N tokens, finding each
token's slot through the block table (a tile spans several cache blocks, so loads are wide), with
an online softmax (the context length is unbounded), masks the partial last tile, and writes the
GROUP output rows. Loading each KV tile once per group, not once per query head, makes GQA cheap.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker_svc.kernels.triton_utils import check_cache_layout, dot_in_fp32, interpreting, next_pow2


@triton.jit
def _paged_decode_kernel(
    q_ptr,  # [B, Hq, D]
    k_cache_ptr,  # [N, bs, Hkv, D]
    v_cache_ptr,
    block_tables_ptr,  # [B, max_blocks] int32
    context_lens_ptr,  # [B] int32
    out_ptr,  # [B, Hq, D]
    scale,
    q_stride_b,
    q_stride_h,
    o_stride_b,
    o_stride_h,
    bt_stride,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,  # >= 16 on a GPU: the rows of tl.dot
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    TILE_N: tl.constexpr,  # KV tokens per iteration (may span several cache blocks)
    DOT_FP32: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    ctx = tl.load(context_lens_ptr + b)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, D_PAD)
    n = tl.arange(0, TILE_N)
    g_mask = g < GROUP
    d_mask = d < HEAD_DIM
    heads = kv_head * GROUP + g
    q_mask = g_mask[:, None] & d_mask[None, :]
    q = tl.load(q_ptr + b * q_stride_b + heads[:, None] * q_stride_h + d[None, :], mask=q_mask, other=0.0)  # [G, D]
    if DOT_FP32:
        q = q.to(tl.float32)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    row: tl.constexpr = NUM_KV_HEADS * HEAD_DIM
    for start in range(0, ctx, TILE_N):
        pos = start + n
        valid = pos < ctx  # partial last tile / block
        # Each token's slot through the block table: block_table[p // bs] * bs + p % bs.
        block = tl.load(block_tables_ptr + b * bt_stride + pos // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        slot = block * BLOCK_SIZE + pos % BLOCK_SIZE
        offs = slot[:, None] * row + kv_head * HEAD_DIM + d[None, :]
        kv_mask = valid[:, None] & d_mask[None, :]
        k = tl.load(k_cache_ptr + offs, mask=kv_mask, other=0.0)  # [N, D]
        v = tl.load(v_cache_ptr + offs, mask=kv_mask, other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [G, N] fp32
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # finite: every tile has a valid token
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])  # [G, N]
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + b * o_stride_b + heads[:, None] * o_stride_h + d[None, :], out.to(out_ptr.dtype.element_ty), mask=q_mask)


def paged_attention_decode(
    q: torch.Tensor,  # [B, Hq, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,  # [N, bs, Hkv, D]
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    context_lens: torch.Tensor,  # [B] int32, each >= 1
    scale: float,
    out: torch.Tensor | None = None,  # [B, Hq, D]
) -> torch.Tensor:  # [B, Hq, D]
    """Attention of one query per sequence over its `context_lens[b]` cached tokens."""
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    assert num_heads % num_kv_heads == 0, f"{num_heads} query heads not a multiple of {num_kv_heads} KV heads"
    assert q.stride(2) == 1, "q's last dim must be contiguous"
    check_cache_layout(k_cache, num_kv_heads, head_dim)
    check_cache_layout(v_cache, num_kv_heads, head_dim)
    assert block_tables.dim() == 2 and block_tables.shape[0] == num_seqs and block_tables.stride(1) == 1
    assert context_lens.shape == (num_seqs,), f"context_lens {tuple(context_lens.shape)} != ({num_seqs},)"
    if out is None:
        out = torch.empty_like(q)
    assert out.shape == q.shape and out.stride(2) == 1
    if num_seqs == 0:
        return out
    group = num_heads // num_kv_heads
    _paged_decode_kernel[(num_seqs, num_kv_heads)](
        q, k_cache, v_cache, block_tables, context_lens.contiguous(), out, float(scale),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        NUM_KV_HEADS=num_kv_heads, GROUP=group, GROUP_PAD=next_pow2(group) if interpreting() else max(16, next_pow2(group)),
        HEAD_DIM=head_dim, D_PAD=next_pow2(head_dim), BLOCK_SIZE=k_cache.shape[1],
        TILE_N=16 if interpreting() else 64, DOT_FP32=dot_in_fp32(q.dtype),
    )
    return out
