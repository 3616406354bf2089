"""Triton kernel: paged attention for decodes (one query token per sequence).

One program per (sequence, KV head): it loads the GROUP query heads that share the KV head, walks
the sequence's block table one KV block at a time with an online softmax (so the context length
is unbounded), masks the partial last block, and writes the GROUP output rows. Loading each KV
block once per group, not once per query head, is what makes GQA cheap here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker_svc.kernels.triton_utils import check_cache_layout, next_pow2


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
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    ctx = tl.load(context_lens_ptr + b)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, D_PAD)
    s = tl.arange(0, BLOCK_SIZE)
    g_mask = g < GROUP
    d_mask = d < HEAD_DIM
    heads = kv_head * GROUP + g
    q_mask = g_mask[:, None] & d_mask[None, :]
    q = tl.load(q_ptr + b * q_stride_b + heads[:, None] * q_stride_h + d[None, :], mask=q_mask, other=0.0)
    q = q.to(tl.float32) * scale  # [G, D]

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    row: tl.constexpr = NUM_KV_HEADS * HEAD_DIM
    for j in range(0, tl.cdiv(ctx, BLOCK_SIZE)):
        block = tl.load(block_tables_ptr + b * bt_stride + j).to(tl.int64)
        s_mask = j * BLOCK_SIZE + s < ctx  # partial last block
        offs = (block * BLOCK_SIZE + s)[:, None] * row + kv_head * HEAD_DIM + d[None, :]
        kv_mask = s_mask[:, None] & d_mask[None, :]
        k = tl.load(k_cache_ptr + offs, mask=kv_mask, other=0.0).to(tl.float32)  # [S, D]
        v = tl.load(v_cache_ptr + offs, mask=kv_mask, other=0.0).to(tl.float32)  # [S, D]
        scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # [G, S]
        scores = tl.where(s_mask[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))  # finite: every visited block has a valid slot
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])  # [G, S]
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
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
        NUM_KV_HEADS=num_kv_heads, GROUP=group, GROUP_PAD=next_pow2(group),
        HEAD_DIM=head_dim, D_PAD=next_pow2(head_dim), BLOCK_SIZE=k_cache.shape[1],
    )
    return out
