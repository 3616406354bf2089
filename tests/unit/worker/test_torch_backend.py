"""The CPU attention path (`TorchAttentionBackend`): decodes of very different lengths, grouped
by length and by gathered bytes (`decode_groups`), attend exactly as the per-sequence reference,
each output in its own row, beside a prefill chunk in the same step."""

from __future__ import annotations

import pytest
import torch

from worker_svc.kernels import backend as backend_module
from worker_svc.kernels.backend import TorchAttentionBackend, decode_groups
from worker_svc.kernels.reference import paged_attention_decode_ref, paged_attention_prefill_ref
from worker_svc.model.metadata import build_metadata

BS, HKV, HQ, D = 4, 2, 4, 8
LAYER_BYTES = 2 * HKV * D * 4  # float32 K and V of a token


def test_groups_by_power_of_two_span_then_by_bytes():
    # Spans in blocks of 4 tokens: 1, 1, 2, 3, 4, 5, 26 → classes 0, 0, 1, 2, 2, 3, 5.
    lens = [1, 4, 5, 9, 16, 17, 101]
    assert decode_groups(lens, BS, LAYER_BYTES) == [[0, 1], [2], [3, 4], [5], [6]]
    # A budget of two 4-block decodes: the 4-block class splits, order kept within it.
    assert decode_groups([16, 13, 15], BS, LAYER_BYTES, max_bytes=2 * 4 * BS * LAYER_BYTES) == [[0, 1], [2]]
    assert decode_groups([16], BS, LAYER_BYTES, max_bytes=1) == [[0]]  # never an empty group


@pytest.mark.parametrize("max_bytes", [backend_module.DECODE_GROUP_BYTES, 3 * 8 * BS * LAYER_BYTES])
def test_grouped_decodes_and_a_prefill_match_the_references(monkeypatch, max_bytes: int):
    monkeypatch.setattr(backend_module.decode_groups, "__defaults__", (max_bytes,))  # the gather budget
    gen = torch.Generator().manual_seed(5)
    decode_ctx = [3, 70, 5, 33, 1, 64, 12, 9, 70, 2]  # KV tokens, the query's own included
    prefill_done, prefill_len = 6, 7  # a chunk of 7 after 6 cached tokens
    need = [-(-c // BS) for c in decode_ctx] + [-(-(prefill_done + prefill_len) // BS)]
    ids = torch.randperm(sum(need) + 3, generator=gen)[: sum(need)].tolist()
    tables, start = [], 0
    for n in need:
        tables.append(ids[start : start + n])
        start += n
    num_blocks = sum(need) + 3
    k_cache = torch.randn(num_blocks, BS, HKV, D, generator=gen)
    v_cache = torch.randn(num_blocks, BS, HKV, D, generator=gen)
    meta, _ = build_metadata([1] * len(decode_ctx) + [prefill_len], [c - 1 for c in decode_ctx] + [prefill_done],
                             tables, BS)
    q = torch.randn(len(decode_ctx) + prefill_len, HQ, D, generator=gen)
    backend = TorchAttentionBackend()
    state = backend.prepare(meta, BS, LAYER_BYTES)
    assert len(state.decodes) > 1  # the decodes really are split
    out = backend.attend(q, k_cache, v_cache, meta, state, scale=D**-0.5)
    nd = len(decode_ctx)
    want = paged_attention_decode_ref(q[:nd], k_cache, v_cache, meta.block_tables[:nd], meta.context_lens[:nd], D**-0.5)
    torch.testing.assert_close(out[:nd], want, atol=1e-5, rtol=1e-5)
    want_prefill = paged_attention_prefill_ref(q, k_cache, v_cache, meta.block_tables[nd:], meta.query_start_loc[nd:],
                                               meta.num_computed[nd:], D**-0.5)
    torch.testing.assert_close(out[nd:], want_prefill[nd:], atol=1e-5, rtol=1e-5)
