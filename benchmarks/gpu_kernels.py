"""GPU timings of the worker's attention paths (needs CUDA):

    python benchmarks/gpu_kernels.py [--dtype bfloat16]

1. Kernels at Llama-3-8B attention shapes (32 query heads, 8 KV heads, head_dim 128, block 16):
   decode for batches of 1..256 sequences at 1k/4k context, chunked prefill of 512..4096 tokens,
   each through the Triton kernel and through the torch backend (gather + SDPA).
2. A full forward of a Llama-3-8B-shaped model with dummy weights: a decode step of 64 sequences
   at 1k context and a 2048-token prefill, triton vs torch backend.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_svc.kernels.backend import make_backend  # noqa: E402
from worker_svc.model.config import ModelConfig  # noqa: E402
from worker_svc.model.kv_cache import KvCache, KvCacheSpec  # noqa: E402
from worker_svc.model.loader import _empty_model, init_dummy_weights  # noqa: E402
from worker_svc.model.metadata import build_metadata  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 32, 8, 128, 16
LLAMA3_8B = ModelConfig("llama", 128256, 4096, 14336, 32, 32, 8, 128, 1e-5, 500000.0, None, 8192, False, False, (128001,))


def _ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=100)


def attention_only(dtype: torch.dtype) -> None:
    print(f"== attention, {dtype}, Hq={HEADS} Hkv={KV_HEADS} D={HEAD_DIM} block={BLOCK}")
    print(f"{'case':<28}{'triton us':>12}{'torch us':>12}")
    for batch, ctx in ((1, 1024), (32, 1024), (128, 1024), (256, 1024), (32, 4096)):
        _row(f"decode B={batch} ctx={ctx}", [1] * batch, [ctx - 1] * batch, dtype)
    for q_len, prefix in ((512, 0), (2048, 0), (4096, 0), (512, 3584)):
        _row(f"prefill q={q_len} prefix={prefix}", [q_len], [prefix], dtype)


def _row(label: str, query_lens: list[int], computed: list[int], dtype: torch.dtype) -> None:
    total = [c + q for c, q in zip(computed, query_lens)]
    need = [-(-t // BLOCK) for t in total]
    tables, start = [], 0
    for n in need:
        tables.append(list(range(start, start + n)))
        start += n
    meta, _ = build_metadata(query_lens, computed, tables, BLOCK, "cuda")
    k = torch.randn(start, BLOCK, KV_HEADS, HEAD_DIM, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    q = torch.randn(sum(query_lens), HEADS, HEAD_DIM, device="cuda", dtype=dtype)
    times = []
    for name in ("triton", "torch"):
        backend = make_backend(name)
        state = backend.prepare(meta, BLOCK)
        times.append(_ms(lambda: backend.attend(q, k, v, meta, state, HEAD_DIM**-0.5)) * 1e3)
    print(f"{label:<28}{times[0]:>12.1f}{times[1]:>12.1f}")


def model_forward(dtype: torch.dtype) -> None:
    print(f"== Llama-3-8B-shaped forward (dummy weights), {dtype}")
    for name in ("triton", "torch"):
        model = _empty_model(LLAMA3_8B, make_backend(name), dtype, "cuda")
        init_dummy_weights(model, seed=0)
        kv = KvCache(KvCacheSpec.for_model(LLAMA3_8B, BLOCK, dtype), 64 * 65 + 130, "cuda")
        tables = [list(range(b * 65, (b + 1) * 65)) for b in range(64)]
        meta, pos = build_metadata([1] * 64, [1023] * 64, tables, BLOCK, "cuda")
        ids = torch.randint(0, 32000, (64,), device="cuda")
        decode = _ms(lambda: model(ids, pos, meta, kv, torch.arange(64, device="cuda")))
        meta, pos = build_metadata([2048], [0], [list(range(64 * 65, 64 * 65 + 128))], BLOCK, "cuda")
        ids = torch.randint(0, 32000, (2048,), device="cuda")
        prefill = _ms(lambda: model(ids, pos, meta, kv, torch.tensor([2047], device="cuda")))
        print(f"{name:<8} decode B=64 ctx=1024: {decode:7.2f} ms ({64 / decode * 1e3:6.0f} tok/s)   "
              f"prefill 2048: {prefill:7.2f} ms ({2048 / prefill * 1e3:6.0f} tok/s)")
        del model, kv
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    with torch.inference_mode():
        attention_only(dtype)
        if not args.skip_model:
            model_forward(dtype)


if __name__ == "__main__":
    main()
