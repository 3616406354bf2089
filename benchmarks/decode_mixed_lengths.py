"""A decode step's forward time when the batch mixes context lengths, against uniform batches:
what the CPU attention path's grouping (worker_svc/kernels/backend.py, `decode_groups`) is for.

    .venv/bin/python benchmarks/decode_mixed_lengths.py [--threads 2]

The bundled SmolLM2-135M in the worker's dtype, the torch backend, a KV cache filled with random
values (zeros or uninitialized memory hide or invent costs), median of 7 steps after 2 warm-ups.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llmserve.model_source import resolve_model  # noqa: E402
from worker_svc.kernels.backend import make_backend  # noqa: E402
from worker_svc.model.kv_cache import KvCache, KvCacheSpec  # noqa: E402
from worker_svc.model.loader import load_model  # noqa: E402
from worker_svc.model.metadata import build_metadata  # noqa: E402
from worker_svc.model.precision import resolve_dtype  # noqa: E402

BLOCK_SIZE = 16
BATCHES = {
    "64 x 300": [300] * 64,
    "32 x 50 + 32 x 550": [50] * 32 + [550] * 32,
    "62 x 40 + 2 x 1100": [40] * 62 + [1100] * 2,
    "64 x 550": [550] * 64,
    "64 x 1100": [1100] * 64,
}


def step_ms(model, kv: KvCache, contexts: list[int]) -> float:  # noqa: ANN001
    tables, next_block = [], 0
    for ctx in contexts:
        n = -(-(ctx + 1) // BLOCK_SIZE)
        tables.append(list(range(next_block, next_block + n)))
        next_block += n
    meta, positions = build_metadata([1] * len(contexts), list(contexts), tables, BLOCK_SIZE, "cpu")
    ids = torch.randint(0, model.config.vocab_size, (len(contexts),))
    rows = torch.arange(len(contexts))
    for _ in range(2):
        model(ids, positions, meta, kv, rows)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        model(ids, positions, meta, kv, rows)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = resolve_dtype("auto", torch.device("cpu"))
    model = load_model(resolve_model("default", "auto"), make_backend("torch"), dtype, "cpu")
    spec = KvCacheSpec.for_model(model.config, BLOCK_SIZE, dtype)
    kv = KvCache(spec, max(sum(-(-(c + 1) // BLOCK_SIZE) for c in b) for b in BATCHES.values()), "cpu")
    kv.data.normal_(0, 1)
    print("| decodes (context tokens) | KV tokens read | step ms |\n|---|---|---|")
    with torch.inference_mode():
        for name, contexts in BATCHES.items():
            print(f"| {name} | {sum(contexts):,} | {step_ms(model, kv, contexts):.1f} |", flush=True)


if __name__ == "__main__":
    main()
