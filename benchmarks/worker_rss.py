"""How the worker's resident memory grows with the step shapes it serves (issue 11), and why.

Drives the worker's own model (the SmolLM2-135M architecture, dummy weights, the dtype `auto`
picks: bfloat16 with prepacked oneDNN linears on an AVX512-BF16 CPU) through rounds of steps of
random shape, the mix a scheduler plans: 0-64 decodes at contexts of 5-600 tokens, beside a
prefill chunk of 2 to the rest of the 512-token budget half of the time. The forward passes run
on one long-lived thread, as in the worker (`worker_svc/forward_thread.py`). The same seed gives
the same shapes. After each round it reports, to tell the causes apart:

- `rss_mb`: the process's resident set (/proc/self/statm);
- `heap_used_mb`, `heap_free_mb`: what glibc malloc has handed out and holds free, over all its
  arenas (mallinfo2): live native objects against freed memory not returned to the system;
- `rows`: the distinct step row counts so far, before padding (oneDNN builds a primitive per row
  count and weight; the worker pads them to a fixed set, `worker_svc/model/row_buckets.py`:
  `--no-buckets` runs them unpadded, as before issue 11's fix);
- `py_mb`: Python objects allocated since round 0 and still alive (tracemalloc, `--tracemalloc`).

    python benchmarks/worker_rss.py --rounds 40 --steps 20
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=16 python benchmarks/worker_rss.py   # a cause ruled in or out

Growth is reported against round `--warm-rounds` (the worker's warm-up and first requests done).
Writes one JSON line per round and a summary line.

`--speed` measures instead what the padding costs with every primitive built already (the unpadded
engine at its best, its caches holding all of its shapes): the same `--steps` random steps run
padded and unpadded alternately, step by step in one process, `--rounds` times after a first pass
that builds both; it reports the tokens per second of each.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import sys
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_svc.openmp import set_openmp_defaults  # noqa: E402  (imports nothing heavy)

set_openmp_defaults(os.environ)  # as the worker's __main__ does, before torch loads libgomp

import torch  # noqa: E402

from llmserve.model_source import resolve_model  # noqa: E402
from llmserve.types import SamplingParams, cdiv  # noqa: E402
from worker_svc.core.sampler import sample  # noqa: E402
from worker_svc.kernels.backend import make_backend  # noqa: E402
from worker_svc.model.kv_cache import KvCache, KvCacheSpec  # noqa: E402
from worker_svc.model.loader import load_model  # noqa: E402
from worker_svc.model.metadata import build_metadata  # noqa: E402
from worker_svc.model.precision import dtype_name, resolve_dtype  # noqa: E402

_GREEDY = SamplingParams(max_tokens=1, temperature=0.0)
BLOCK_SIZE = 16


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def heap_mb() -> tuple[float, float]:
    """(in use, free) over every malloc arena, MB: mmapped chunks count as in use."""
    info = _libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


@dataclass(frozen=True)
class Step:
    decode_contexts: tuple[int, ...]  # cached tokens of each decode
    prefill: int  # tokens of the prefill chunk (0: none)

    @property
    def rows(self) -> int:
        return len(self.decode_contexts) + self.prefill


def random_steps(rng: random.Random, count: int, budget: int, max_seqs: int) -> list[Step]:
    steps = []
    for _ in range(count):
        decodes = rng.randint(0, max_seqs)
        prefill = rng.randint(2, budget - decodes) if rng.random() < 0.5 and budget - decodes >= 2 else 0
        if decodes == 0 and prefill == 0:
            prefill = rng.randint(2, budget)
        steps.append(Step(tuple(rng.randint(5, 600) for _ in range(decodes)), prefill))
    return steps


def run_step(model, kv_cache: KvCache, step: Step) -> None:
    query_lens = [1] * len(step.decode_contexts) + ([step.prefill] if step.prefill else [])
    computed = list(step.decode_contexts) + ([0] if step.prefill else [])
    tables, next_block = [], 0
    for q, c in zip(query_lens, computed):
        need = cdiv(q + c, BLOCK_SIZE)
        tables.append([(next_block + i) % kv_cache.num_blocks for i in range(need)])
        next_block = (next_block + need) % kv_cache.num_blocks
    meta, positions = build_metadata(query_lens, computed, tables, BLOCK_SIZE, "cpu")
    rows = torch.tensor([meta.query_start_host[b + 1] - 1 for b in range(len(query_lens))])
    logits = model(torch.zeros(sum(query_lens), dtype=torch.long), positions, meta, kv_cache, rows)
    sample(logits, [_GREEDY] * len(query_lens), [0] * len(query_lens))


@dataclass(frozen=True)
class Round:
    round: int
    seconds: float
    tokens: int
    rss_mb: float
    heap_used_mb: float
    heap_free_mb: float
    rows: int
    py_mb: float | None


def probe(args: argparse.Namespace) -> list[Round]:
    dtype = resolve_dtype(args.dtype, torch.device("cpu"))
    model = load_model(resolve_model("default", "dummy"), make_backend("torch"), dtype, "cpu")
    spec = KvCacheSpec.for_model(model.config, BLOCK_SIZE, dtype)
    kv_cache = KvCache(spec, spec.num_blocks_for_memory(args.kv_gb), "cpu")
    if args.buckets:  # what the worker's StepRunner does at start
        start = time.perf_counter()
        model.bucket_rows(args.budget)
        model.warm_row_buckets(args.max_seqs)
        print(f"# row buckets: {model.row_buckets and len(model.row_buckets.sizes)}, warmed in "
              f"{time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    rng = random.Random(args.seed)
    seen_rows: set[int] = set()
    rounds: list[Round] = []
    if args.tracemalloc:
        tracemalloc.start()
    print(f"# {dtype_name(dtype)}, {kv_cache.num_blocks} KV blocks, threads {torch.get_num_threads()}, "
          f"pid {os.getpid()}, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    with torch.inference_mode():
        for index in range(args.rounds):
            steps = random_steps(rng, args.steps, args.budget, args.max_seqs)
            start = time.perf_counter()
            for step in steps:
                run_step(model, kv_cache, step)
                seen_rows.add(step.rows)
            seconds = time.perf_counter() - start
            used, free = heap_mb()
            py = tracemalloc.get_traced_memory()[0] / 2**20 if args.tracemalloc else None
            rounds.append(Round(index, round(seconds, 3), sum(s.rows for s in steps), round(rss_mb(), 1),
                                round(used, 1), round(free, 1), len(seen_rows), py and round(py, 2)))
            print(json.dumps(asdict(rounds[-1])), flush=True)
    return rounds


def speed(args: argparse.Namespace) -> dict[str, float]:
    dtype = resolve_dtype(args.dtype, torch.device("cpu"))
    model = load_model(resolve_model("default", "dummy"), make_backend("torch"), dtype, "cpu")
    spec = KvCacheSpec.for_model(model.config, BLOCK_SIZE, dtype)
    kv_cache = KvCache(spec, spec.num_blocks_for_memory(args.kv_gb), "cpu")
    model.bucket_rows(args.budget)
    buckets = model.row_buckets
    steps = random_steps(random.Random(args.seed), args.steps, args.budget, args.max_seqs)
    seconds = {"padded": 0.0, "unpadded": 0.0}
    with torch.inference_mode():
        for timed in [False] + [True] * args.rounds:
            for step in steps:
                for name, rows in (("padded", buckets), ("unpadded", None)):
                    model.row_buckets = rows
                    start = time.perf_counter()
                    run_step(model, kv_cache, step)
                    if timed:
                        seconds[name] += time.perf_counter() - start
    tokens = args.rounds * sum(s.rows for s in steps)
    result = {f"{name}_tok_s": round(tokens / t, 1) for name, t in seconds.items()}
    result["padded_over_unpadded"] = round(seconds["unpadded"] / seconds["padded"], 4)
    result["distinct_rows"] = len({s.rows for s in steps})
    result["load1"] = round(os.getloadavg()[0], 2)
    return result


def summary(rounds: list[Round], warm: int) -> dict[str, float]:
    base, last = rounds[warm], rounds[-1]
    timed = rounds[warm + 1:]
    return {
        "rss_warm_mb": base.rss_mb, "rss_last_mb": last.rss_mb,
        "growth_pct": round(100 * (last.rss_mb / base.rss_mb - 1), 1),
        "last5_mb_per_round": round((last.rss_mb - rounds[-6].rss_mb) / 5, 1) if len(rounds) > 6 else 0.0,
        "heap_used_growth_mb": round(last.heap_used_mb - base.heap_used_mb, 1),
        "heap_free_growth_mb": round(last.heap_free_mb - base.heap_free_mb, 1),
        "tok_s": round(sum(r.tokens for r in timed) / max(1e-9, sum(r.seconds for r in timed)), 1),
        "load1": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--warm-rounds", type=int, default=3, help="growth is measured from this round")
    parser.add_argument("--budget", type=int, default=512, help="tokens per step (the worker's CPU default)")
    parser.add_argument("--max-seqs", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--kv-gb", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--buckets", action=argparse.BooleanOptionalAction, default=True,
                        help="pad steps to the worker's row buckets and warm them first (the worker's default)")
    parser.add_argument("--speed", action="store_true", help="padding cost with every primitive built (above)")
    parser.add_argument("--tracemalloc", action="store_true", help="also count live Python allocations")
    args = parser.parse_args()
    result: list[object] = []
    # One long-lived thread runs every forward pass, as in the worker (its own malloc arena).
    thread = threading.Thread(target=lambda: result.append(speed(args) if args.speed else probe(args)), name="forward")
    thread.start()
    thread.join()
    print(json.dumps({"speed": result[0]} if args.speed else {"summary": summary(result[0], args.warm_rounds)}),
          flush=True)


if __name__ == "__main__":
    main()
