"""Pure-torch references of the kernels: simple, per-sequence and computed in float32, so that
they are obviously right. The Triton kernels and the fast torch backend are tested against them.

Cache layout (docs/design.md): `k_cache`, `v_cache` are `[num_blocks, block_size, num_kv_heads,
head_dim]`; the token at position p of a sequence lives in slot
`block_table[p // block_size] * block_size + p % block_size`.
"""

from __future__ import annotations

import torch


def store_kvcache_ref(
    key: torch.Tensor,  # [T, Hkv, D]
    value: torch.Tensor,  # [T, Hkv, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,  # [N, bs, Hkv, D]
    slot_mapping: torch.Tensor,  # [T] int, -1 = skip
) -> None:
    """Writes token t's K/V into slot `slot_mapping[t]` (in place); slot -1 writes nothing."""
    block_size = k_cache.shape[1]
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        k_cache[slot // block_size, slot % block_size] = key[t]
        v_cache[slot // block_size, slot % block_size] = value[t]


def gather_kv_ref(
    cache: torch.Tensor,  # [N, bs, Hkv, D]
    block_table: torch.Tensor,  # [max_blocks]
    num_tokens: int,
) -> torch.Tensor:  # [num_tokens, Hkv, D]
    """The first `num_tokens` cached tokens of one sequence, in position order."""
    block_size = cache.shape[1]
    positions = torch.arange(num_tokens, device=cache.device)
    blocks = block_table.long()[positions // block_size]
    return cache[blocks, positions % block_size]


def _attend_ref(
    q: torch.Tensor,  # [Q, Hq, D]
    k: torch.Tensor,  # [K, Hkv, D]
    v: torch.Tensor,  # [K, Hkv, D]
    q_positions: torch.Tensor,  # [Q]
    scale: float,
) -> torch.Tensor:  # [Q, Hq, D]
    group = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)  # [K, Hq, D]
    v = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale  # [Hq, Q, K]
    kv_positions = torch.arange(k.shape[0], device=q.device)
    allowed = kv_positions[None, :] <= q_positions[:, None]  # [Q, K] causal
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v).to(q.dtype)


def paged_attention_decode_ref(
    q: torch.Tensor,  # [B, Hq, D]: one query token per sequence
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,  # [N, bs, Hkv, D]
    block_tables: torch.Tensor,  # [B, max_blocks]
    context_lens: torch.Tensor,  # [B]: KV tokens, the query's own included
    scale: float,
) -> torch.Tensor:  # [B, Hq, D]
    """Each query attends to all `context_lens[b]` cached tokens of its sequence."""
    out = torch.empty_like(q)
    for b, ctx in enumerate(context_lens.tolist()):
        k = gather_kv_ref(k_cache, block_tables[b], ctx)
        v = gather_kv_ref(v_cache, block_tables[b], ctx)
        out[b] = _attend_ref(q[b : b + 1], k, v, torch.tensor([ctx - 1], device=q.device), scale)[0]
    return out


def paged_attention_prefill_ref(
    q: torch.Tensor,  # [T, Hq, D]: flattened query chunks
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,  # [N, bs, Hkv, D]
    block_tables: torch.Tensor,  # [B, max_blocks]
    query_start_loc: torch.Tensor,  # [B+1]
    num_computed: torch.Tensor,  # [B]: cached tokens before the chunk
    scale: float,
) -> torch.Tensor:  # [T, Hq, D]
    """Query i of sequence b (position `num_computed[b] + i`) attends to the cached prefix and
    causally within its own chunk, whose KV is already in the cache."""
    out = torch.empty_like(q)
    starts = query_start_loc.tolist()
    for b, computed in enumerate(num_computed.tolist()):
        lo, hi = starts[b], starts[b + 1]
        ctx = computed + hi - lo
        k = gather_kv_ref(k_cache, block_tables[b], ctx)
        v = gather_kv_ref(v_cache, block_tables[b], ctx)
        positions = torch.arange(computed, ctx, device=q.device)
        out[lo:hi] = _attend_ref(q[lo:hi], k, v, positions, scale)
    return out
