"""Triton kernel: paged attention for chunked prefill.

A chunk's queries (positions `num_computed .. num_computed + q_len - 1`) attend to the cached
prefix and causally within the chunk. The chunk's own KV is written to the cache first, so
everything is read through the block table, TILE_N tokens at a time (each token's slot looked up,
so a tile may span several cache blocks). One program per (sequence, query head, tile of BLOCK_M
queries); it stops at the KV tile that holds the query tile's last position.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worker_svc.kernels.triton_utils import check_cache_layout, dot_in_fp32, interpreting, next_pow2


@triton.jit
def _paged_prefill_kernel(
    q_ptr,  # [T, Hq, D]
    k_cache_ptr,  # [N, bs, Hkv, D]
    v_cache_ptr,
    block_tables_ptr,  # [B, max_blocks] int32
    query_start_loc_ptr,  # [B+1] int32 (indices into q's tokens)
    num_computed_ptr,  # [B] int32
    out_ptr,  # [T, Hq, D]
    scale,
    q_stride_t,
    q_stride_h,
    o_stride_t,
    o_stride_h,
    bt_stride,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    TILE_N: tl.constexpr,  # KV tokens per iteration (may span several cache blocks)
    DOT_FP32: tl.constexpr,
):
    b = tl.program_id(0)
    head = tl.program_id(1)
    m_block = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + b)
    q_len = tl.load(query_start_loc_ptr + b + 1) - q_start
    if m_block * BLOCK_M >= q_len:  # this tile is past the chunk's end
        return
    computed = tl.load(num_computed_ptr + b)
    kv_head = head // GROUP

    m_offs = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, D_PAD)
    n = tl.arange(0, TILE_N)
    m_mask = m_offs < q_len
    d_mask = d < HEAD_DIM
    q_pos = computed + m_offs  # [M] absolute positions
    q_mask = m_mask[:, None] & d_mask[None, :]
    q = tl.load(q_ptr + (q_start + m_offs)[:, None] * q_stride_t + head * q_stride_h + d[None, :], mask=q_mask, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    kv_end = computed + tl.minimum(q_len, (m_block + 1) * BLOCK_M)  # KV this tile can see
    row: tl.constexpr = NUM_KV_HEADS * HEAD_DIM
    for start in range(0, kv_end, TILE_N):
        kv_pos = start + n
        s_mask = kv_pos < kv_end
        # Each token's slot through the block table: block_table[p // bs] * bs + p % bs.
        block = tl.load(block_tables_ptr + b * bt_stride + kv_pos // BLOCK_SIZE, mask=s_mask, other=0).to(tl.int64)
        offs = (block * BLOCK_SIZE + kv_pos % BLOCK_SIZE)[:, None] * row + kv_head * HEAD_DIM + d[None, :]
        kv_mask = s_mask[:, None] & d_mask[None, :]
        k = tl.load(k_cache_ptr + offs, mask=kv_mask, other=0.0)  # [N, D]
        v = tl.load(v_cache_ptr + offs, mask=kv_mask, other=0.0)  # [N, D]
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [M, N] fp32
        allowed = (kv_pos[None, :] <= q_pos[:, None]) & s_mask[None, :]
        scores = tl.where(allowed, scores, float("-inf"))
        # Finite: position 0 of the first tile is visible to every row.
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])  # [M, N]
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + (q_start + m_offs)[:, None] * o_stride_t + head * o_stride_h + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=q_mask)


def paged_attention_prefill(
    q: torch.Tensor,  # [T, Hq, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,  # [N, bs, Hkv, D]
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    query_start_loc: torch.Tensor,  # [B+1] int32, indices into q's tokens
    num_computed: torch.Tensor,  # [B] int32
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,  # [T, Hq, D]
) -> torch.Tensor:  # [T, Hq, D]
    """Chunked-prefill attention for B sequences whose chunks sit in q at `query_start_loc`.
    Tokens of q outside every chunk are left untouched in `out`."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    num_seqs = num_computed.shape[0]
    assert num_heads % num_kv_heads == 0, f"{num_heads} query heads not a multiple of {num_kv_heads} KV heads"
    assert q.stride(2) == 1, "q's last dim must be contiguous"
    check_cache_layout(k_cache, num_kv_heads, head_dim)
    check_cache_layout(v_cache, num_kv_heads, head_dim)
    block_size = k_cache.shape[1]
    if not interpreting():
        assert head_dim >= 16, "tl.dot needs head_dim >= 16 on a GPU"
    assert block_tables.dim() == 2 and block_tables.shape[0] == num_seqs and block_tables.stride(1) == 1
    assert query_start_loc.shape == (num_seqs + 1,), "query_start_loc must have B+1 entries"
    if out is None:
        out = torch.empty_like(q)
    assert out.shape == q.shape and out.stride(2) == 1
    if num_seqs == 0 or max_query_len == 0:
        return out
    block_m = 16 if interpreting() else 64
    grid = (num_seqs, num_heads, triton.cdiv(max_query_len, block_m))
    _paged_prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, query_start_loc.contiguous(), num_computed.contiguous(), out,
        float(scale), q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        NUM_KV_HEADS=num_kv_heads, GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, D_PAD=next_pow2(head_dim),
        BLOCK_SIZE=block_size, BLOCK_M=block_m, TILE_N=16 if interpreting() else 64, DOT_FP32=dot_in_fp32(q.dtype),
    )
    return out
