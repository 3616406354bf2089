"""The Triton kernels compiled on a CUDA GPU against their torch references at realistic shapes
(bf16 and fp16; Llama-3-8B-like heads: 32 query heads, 8 KV heads, head_dim 128, block 16), and
the whole model with the triton backend against the torch backend. Prints kernel timings.
Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 32, 8, 128, 16
# Output rounding dominates: bf16 has 8 mantissa bits.
TOL = {torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _setup(context_lens: list[int], dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    need = [-(-c // BLOCK) for c in context_lens]
    num_blocks = sum(need) + 8
    perm = torch.randperm(num_blocks, device="cuda", generator=gen)
    tables = torch.zeros(len(need), max(need), dtype=torch.int32, device="cuda")
    offset = 0
    for b, n in enumerate(need):
        tables[b, :n] = perm[offset : offset + n].int()
        offset += n
    shape = (num_blocks, BLOCK, KV_HEADS, HEAD_DIM)
    k = torch.randn(shape, device="cuda", generator=gen).to(dtype)
    v = torch.randn(shape, device="cuda", generator=gen).to(dtype)
    return k, v, tables, gen


def _bench_ms(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=10, rep=50)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_store_kvcache_cuda(dtype: torch.dtype) -> None:
    from worker_svc.kernels.reference import store_kvcache_ref
    from worker_svc.kernels.store_kvcache import store_kvcache

    k_cache, v_cache, _, gen = _setup([4096], dtype)
    T = 2048
    key = torch.randn(T, KV_HEADS, HEAD_DIM, device="cuda", generator=gen).to(dtype)
    value = torch.randn(T, KV_HEADS, HEAD_DIM, device="cuda", generator=gen).to(dtype)
    slots = torch.randperm(k_cache.shape[0] * BLOCK, device="cuda", generator=gen)[:T]
    slots[::7] = -1
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    store_kvcache_ref(key, value, k_ref, v_ref, slots.cpu())
    store_kvcache(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)
    print(f"\nstore_kvcache {dtype} T={T}: {_bench_ms(lambda: store_kvcache(key, value, k_cache, v_cache, slots)) * 1e3:.1f} us")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_paged_decode_cuda(dtype: torch.dtype) -> None:
    from worker_svc.kernels.paged_attention_decode import paged_attention_decode
    from worker_svc.kernels.reference import paged_attention_decode_ref

    gen = torch.Generator().manual_seed(1)
    context_lens = torch.randint(1, 2048, (64,), generator=gen).tolist() + [1, 16, 17, 2047]
    k_cache, v_cache, tables, g = _setup(context_lens, dtype, 1)
    q = torch.randn(len(context_lens), HEADS, HEAD_DIM, device="cuda", generator=g).to(dtype)
    ctx = torch.tensor(context_lens, dtype=torch.int32, device="cuda")
    scale = HEAD_DIM**-0.5
    got = paged_attention_decode(q, k_cache, v_cache, tables, ctx, scale)
    expected = paged_attention_decode_ref(q, k_cache, v_cache, tables, ctx, scale)
    torch.testing.assert_close(got.float(), expected.float(), atol=TOL[dtype], rtol=TOL[dtype])
    ms = _bench_ms(lambda: paged_attention_decode(q, k_cache, v_cache, tables, ctx, scale))
    kv_bytes = 2 * sum(context_lens) * KV_HEADS * HEAD_DIM * q.element_size()
    print(f"\npaged decode {dtype} B={len(context_lens)} sum_ctx={sum(context_lens)}: {ms * 1e3:.1f} us, "
          f"{kv_bytes / ms / 1e6:.0f} GB/s of KV")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_paged_prefill_cuda(dtype: torch.dtype) -> None:
    from worker_svc.kernels.paged_attention_prefill import paged_attention_prefill
    from worker_svc.kernels.reference import paged_attention_prefill_ref

    num_computed = [0, 700, 1000, 33]
    query_lens = [512, 300, 17, 128]
    context_lens = [c + q for c, q in zip(num_computed, query_lens)]
    k_cache, v_cache, tables, g = _setup(context_lens, dtype, 2)
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    q = torch.randn(starts[-1], HEADS, HEAD_DIM, device="cuda", generator=g).to(dtype)
    qsl = torch.tensor(starts, dtype=torch.int32, device="cuda")
    computed = torch.tensor(num_computed, dtype=torch.int32, device="cuda")
    scale = HEAD_DIM**-0.5
    got = paged_attention_prefill(q, k_cache, v_cache, tables, qsl, computed, max(query_lens), scale)
    expected = paged_attention_prefill_ref(q, k_cache, v_cache, tables, qsl, computed, scale)
    torch.testing.assert_close(got.float(), expected.float(), atol=TOL[dtype], rtol=TOL[dtype])
    ms = _bench_ms(lambda: paged_attention_prefill(q, k_cache, v_cache, tables, qsl, computed, max(query_lens), scale))
    flops = sum(4 * HEADS * HEAD_DIM * q_len * (c + (q_len + 1) / 2) for c, q_len in zip(num_computed, query_lens))
    print(f"\npaged prefill {dtype} tokens={starts[-1]}: {ms * 1e3:.1f} us, {flops / ms / 1e9:.1f} TFLOP/s")


def test_model_triton_backend_matches_torch_backend_cuda() -> None:
    """A small random Llama in bf16 on the GPU: a mixed batch (decodes + a chunk after a prefix)
    through the triton backend gives the torch backend's logits."""
    from worker_svc.kernels.backend import make_backend
    from worker_svc.model.config import ModelConfig
    from worker_svc.model.kv_cache import KvCache, KvCacheSpec
    from worker_svc.model.loader import _empty_model, init_dummy_weights
    from worker_svc.model.metadata import build_metadata

    config = ModelConfig("llama", 1000, 512, 1024, 2, HEADS // 4, KV_HEADS // 4, HEAD_DIM, 1e-5, 10000.0, None, 4096,
                         False, False, (2,))
    logits = {}
    for name in ("torch", "triton"):
        model = _empty_model(config, make_backend(name), torch.bfloat16, "cuda")
        init_dummy_weights(model, seed=3)
        kv = KvCache(KvCacheSpec.for_model(config, BLOCK, torch.bfloat16), 64, "cuda")
        # Fill the prefixes, then one mixed step: 2 decodes and a 40-token chunk after 50 tokens.
        tables = [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
        gen = torch.Generator().manual_seed(4)
        ids = torch.randint(0, 1000, (200,), generator=gen).cuda()
        meta, pos = build_metadata([70, 33, 50], [0, 0, 0], tables, BLOCK, "cuda")
        model(ids[:153], pos, meta, kv, torch.tensor([0], device="cuda"))
        meta, pos = build_metadata([1, 1, 40], [70, 33, 50], tables, BLOCK, "cuda")
        logits[name] = model(ids[153:195], pos, meta, kv, torch.arange(42, device="cuda"))
    torch.testing.assert_close(logits["triton"], logits["torch"], atol=5e-2, rtol=5e-2)
