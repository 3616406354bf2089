"""Times the forward pass of the worker's model on synthetic batches (no server):

    python -m worker_svc.bench_forward --model default --decode-batch 32 --context 200 --prefill 512

Reports the median wall time of a decode step (B sequences, one token each, ~context cached
tokens) and of one prefill chunk, for the chosen attention backend and dtype.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmserve.model_source import resolve_model
from worker_svc.kernels.backend import default_backend_name, make_backend
from worker_svc.model.kv_cache import KvCache, KvCacheSpec
from worker_svc.model.llama import LlamaModel
from worker_svc.model.loader import load_model
from worker_svc.model.metadata import build_metadata
from worker_svc.model.precision import dtype_name, resolve_dtype


def time_decode(model: LlamaModel, kv: KvCache, batch: int, context: int, repeats: int) -> float:
    """Median seconds of one decode step of `batch` sequences at `context` tokens."""
    bs = kv.spec.block_size
    per_seq = -(-(context + 1) // bs)
    tables = [list(range(b * per_seq, (b + 1) * per_seq)) for b in range(batch)]
    meta, positions = build_metadata([1] * batch, [context] * batch, tables, bs, kv.data.device)
    ids = torch.randint(0, model.config.vocab_size, (batch,), device=kv.data.device)
    rows = torch.arange(batch, device=kv.data.device)
    return _median(lambda: model(ids, positions, meta, kv, rows), repeats, kv.data.device)


def time_prefill(model: LlamaModel, kv: KvCache, length: int, repeats: int) -> float:
    bs = kv.spec.block_size
    meta, positions = build_metadata([length], [0], [list(range(-(-length // bs)))], bs, kv.data.device)
    ids = torch.randint(0, model.config.vocab_size, (length,), device=kv.data.device)
    last = torch.tensor([length - 1], device=kv.data.device)
    return _median(lambda: model(ids, positions, meta, kv, last), repeats, kv.data.device)


def _median(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto (the worker's choice for the device), float32, bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attention-backend", default="")
    parser.add_argument("--decode-batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=200)
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backend = make_backend(args.attention_backend or default_backend_name(args.device))
    dtype = resolve_dtype(args.dtype, torch.device(args.device))
    start = time.perf_counter()
    model = load_model(resolve_model(args.model, args.load_format), backend, dtype, args.device)
    print(f"loaded in {time.perf_counter() - start:.1f}s; backend={backend.name} dtype={dtype_name(dtype)} "
          f"threads={torch.get_num_threads()}")
    spec = KvCacheSpec.for_model(model.config, args.block_size, dtype)
    blocks = args.decode_batch * (-(-(args.context + 1) // args.block_size)) + -(-args.prefill // args.block_size)
    kv = KvCache(spec, blocks, args.device)
    decode = time_decode(model, kv, args.decode_batch, args.context, args.repeats)
    print(f"decode  batch={args.decode_batch} context={args.context}: {decode * 1e3:.1f} ms/step "
          f"= {args.decode_batch / decode:.0f} tok/s (forward only)")
    prefill = time_prefill(model, kv, args.prefill, args.repeats)
    print(f"prefill {args.prefill} tokens: {prefill * 1e3:.1f} ms = {args.prefill / prefill:.0f} tok/s")


if __name__ == "__main__":
    main()
