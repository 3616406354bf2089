"""Attention backends: how a layer writes its KV to the paged cache and attends through it.

`torch` is the fast CPU path: decodes are batched into masked attentions over KV gathered
(padded) from the cache, one per group of similar context lengths (`decode_groups`), prefill
chunks use SDPA with the causal offset of their cached prefix.
`triton` launches the Triton kernels (the GPU path; on CPU only under TRITON_INTERPRET=1).
Both take the per-step work out of the metadata once per forward (`prepare`), not once per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from worker_svc.model.metadata import AttentionMetadata

BACKENDS = ("torch", "triton")


class AttentionBackend(Protocol):
    name: str

    def prepare(self, meta: AttentionMetadata, block_size: int, kv_bytes_per_token: int) -> object:
        """Per-step state shared by every layer of one forward pass (`kv_bytes_per_token`: one
        layer's K and V of a token in the cache)."""

    def write_kv(self, key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 meta: AttentionMetadata, state: object) -> None:
        """Writes token t's K/V ([T, Hkv, D]) into its slot."""

    def attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
               state: object, scale: float) -> torch.Tensor:
        """q [T, Hq, D] → attention output [T, Hq, D] over each sequence's cached KV."""


def make_backend(name: str) -> AttentionBackend:
    if name == "torch":
        return TorchAttentionBackend()
    if name == "triton":
        return TritonAttentionBackend()
    raise ValueError(f"--attention-backend must be one of {', '.join(BACKENDS)}, got {name!r}")


def default_backend_name(device: torch.device | str) -> str:
    return "triton" if torch.device(device).type == "cuda" else "torch"


@dataclass(frozen=True)
class _PrefillSeq:
    lo: int  # first query token in the flattened batch
    hi: int
    blocks: torch.Tensor  # [nb] the sequence's cache blocks, covering positions 0..ctx-1
    ctx: int
    causal_mask: torch.Tensor | None  # [q_len, ctx] bool, None when the chunk starts at 0 (plain causal)


@dataclass(frozen=True)
class _DecodeGroup:
    rows: torch.Tensor | None  # [n] these decodes' rows among the step's decodes; None: all, in order
    blocks: torch.Tensor  # [n * nb] cache blocks gathered for them (L = nb * bs, padded)
    mask: torch.Tensor  # [n, 1, 1, L] additive: 0 for real tokens, -inf for padding
    n: int


@dataclass(frozen=True)
class _TorchStepState:
    write_tokens: torch.Tensor | None  # [T'] tokens to write when some slots are -1, else None (all)
    write_slots: torch.Tensor  # [T'] their slots
    decodes: tuple[_DecodeGroup, ...]
    prefills: tuple[_PrefillSeq, ...]


# The K and V one decode attention gathers, at most: measured on the 2-core dev VM (SmolLM2,
# bf16), 64 decodes at 1,100 tokens took 697 ms a step gathered at once, 205 ms in groups of
# <= 6 MiB, 222 and 220 ms at 3 and 12 MiB; 64 at 300 tokens, 89 and 80 ms. Past the caches,
# a decode's scores and values are read from memory twice (gather, then attend).
DECODE_GROUP_BYTES = 6 << 20


def decode_groups(context_lens: list[int], block_size: int, kv_bytes_per_token: int,
                  max_bytes: int = DECODE_GROUP_BYTES) -> list[list[int]]:
    """The step's decodes (by row) in groups of similar length, each gathering at most
    `max_bytes` of K and V (`kv_bytes_per_token`: one layer's, both). The blocks a decode spans,
    rounded up to a power of two, name its group, so a padded attention costs each decode at
    most twice its own KV: one for the whole batch cost every decode the longest one's, and 62
    decodes at 40 tokens beside 2 at 1,100 took 8x the time of 64 at 300 though they read a
    quarter of the KV (and the step cost model, `llmserve.step_cost`, charges the KV read)."""
    by_span: dict[int, list[int]] = {}
    for row, ctx in enumerate(context_lens):
        by_span.setdefault((max(1, -(-ctx // block_size)) - 1).bit_length(), []).append(row)
    groups = []
    for span in sorted(by_span):
        rows = by_span[span]
        per_group = max(1, max_bytes // ((block_size << span) * kv_bytes_per_token))
        groups.extend(rows[i : i + per_group] for i in range(0, len(rows), per_group))
    return groups


class TorchAttentionBackend:
    name = "torch"

    def prepare(self, meta: AttentionMetadata, block_size: int, kv_bytes_per_token: int) -> _TorchStepState:
        device = meta.slot_mapping.device
        valid = meta.slot_mapping >= 0
        if bool(valid.all()):
            write_tokens, write_slots = None, meta.slot_mapping
        else:
            write_tokens = valid.nonzero().squeeze(1)
            write_slots = meta.slot_mapping[write_tokens]
        nd = meta.num_decodes
        ctx = meta.context_lens_host
        decodes = []
        if nd:
            rows_of = decode_groups(ctx[:nd], block_size, kv_bytes_per_token)
            for rows in rows_of:
                nblocks = -(-max(ctx[r] for r in rows) // block_size)
                index = None if len(rows_of) == 1 else torch.tensor(rows, device=device)
                tables = meta.block_tables[:nd] if index is None else meta.block_tables.index_select(0, index)
                lens = meta.context_lens[:nd] if index is None else meta.context_lens.index_select(0, index)
                # Whole blocks are gathered (contiguous block_size * Hkv * D runs): much faster than per-token rows.
                blocks = tables[:, :nblocks].reshape(-1).long()
                pad = torch.arange(nblocks * block_size, device=device)[None, :] >= lens[:, None]  # [n, L]
                mask = torch.zeros(pad.shape, device=device).masked_fill(pad, float("-inf"))[:, None, None, :]
                decodes.append(_DecodeGroup(index, blocks, mask, len(rows)))
        prefills = []
        starts = meta.query_start_host
        for b in range(nd, meta.num_seqs):
            computed, total = meta.num_computed_host[b], ctx[b]
            nblocks = -(-total // block_size)
            blocks = meta.block_tables[b, :nblocks].long()
            mask = None
            if computed:
                q_pos = torch.arange(computed, total, device=device)
                mask = torch.arange(total, device=device)[None, :] <= q_pos[:, None]
            prefills.append(_PrefillSeq(starts[b], starts[b + 1], blocks, total, mask))
        return _TorchStepState(write_tokens, write_slots, tuple(decodes), tuple(prefills))

    def write_kv(self, key, value, k_cache, v_cache, meta, state: _TorchStepState) -> None:
        # key/value [T, Hkv, D] → flat caches [N*bs, Hkv, D]
        if state.write_tokens is not None:
            key, value = key[state.write_tokens], value[state.write_tokens]
        k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, state.write_slots, key)
        v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, state.write_slots, value)

    def attend(self, q, k_cache, v_cache, meta, state: _TorchStepState, scale: float) -> torch.Tensor:
        num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            # A masked SDPA over whole gathered blocks per group of decodes. The query group of each
            # KV head rides in the query-length dimension ([n, Hkv, G, D] against [n, Hkv, L, D]):
            # the CPU flash kernel then blocks G query rows per KV head instead of one row per
            # (sequence, head), 5x faster in bfloat16 at 128 decodes than enable_gqa's layout.
            qd = q[:nd].view(nd, num_kv_heads, q.shape[1] // num_kv_heads, head_dim)  # [Bd, Hkv, G, D]
            for group in state.decodes:
                qg = qd if group.rows is None else qd.index_select(0, group.rows)
                k = _gather_blocks(k_cache, group.blocks).view(group.n, -1, num_kv_heads, head_dim).transpose(1, 2)
                v = _gather_blocks(v_cache, group.blocks).view(group.n, -1, num_kv_heads, head_dim).transpose(1, 2)
                o = F.scaled_dot_product_attention(qg, k, v, attn_mask=group.mask.to(q.dtype), scale=scale)
                o = o.reshape(group.n, -1, head_dim)  # [n, Hq, D]
                if group.rows is None:
                    out[:nd] = o
                else:
                    out.index_copy_(0, group.rows, o)
        for seq in state.prefills:
            qs = q[seq.lo : seq.hi].transpose(0, 1).unsqueeze(0)  # [1, Hq, Q, D]
            k = _gather_blocks(k_cache, seq.blocks).view(-1, num_kv_heads, head_dim)[: seq.ctx]  # [ctx, Hkv, D]
            v = _gather_blocks(v_cache, seq.blocks).view(-1, num_kv_heads, head_dim)[: seq.ctx]
            k, v = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)  # [1, Hkv, ctx, D]
            o = F.scaled_dot_product_attention(
                qs, k, v, attn_mask=seq.causal_mask, is_causal=seq.causal_mask is None, scale=scale, enable_gqa=True
            )  # [1, Hq, Q, D]
            out[seq.lo : seq.hi] = o[0].transpose(0, 1)
        return out


def _gather_blocks(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    # cache [N, bs, Hkv, D] → [len(blocks), bs * Hkv * D]: a row copy per block
    return cache.view(cache.shape[0], -1).index_select(0, blocks)


class TritonAttentionBackend:
    name = "triton"

    def prepare(self, meta: AttentionMetadata, block_size: int, kv_bytes_per_token: int) -> None:
        return None

    def write_kv(self, key, value, k_cache, v_cache, meta, state) -> None:
        from worker_svc.kernels.store_kvcache import store_kvcache

        store_kvcache(key, value, k_cache, v_cache, meta.slot_mapping)

    def attend(self, q, k_cache, v_cache, meta, state, scale: float) -> torch.Tensor:
        from worker_svc.kernels.paged_attention_decode import paged_attention_decode
        from worker_svc.kernels.paged_attention_prefill import paged_attention_prefill

        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            paged_attention_decode(q[:nd], k_cache, v_cache, meta.block_tables[:nd], meta.context_lens[:nd], scale,
                                   out=out[:nd])
        if nd < meta.num_seqs:
            paged_attention_prefill(q, k_cache, v_cache, meta.block_tables[nd:], meta.query_start_loc[nd:],
                                    meta.num_computed[nd:], meta.max_query_len, scale, out=out)
        return out
