"""Times the worker's forward pass and sampling over a grid of step shapes, at start, so that the
worker can report its own step-time model (`llmserve.step_cost`) to the scheduler.

A shape is `decode` sequences at `context` tokens plus at most one prefill chunk, the mix a
scheduler plans. The KV of the decoders is not computed first: attention's cost depends on how
many cached tokens it reads, not on their values, so the timer points each sequence's block table
at blocks of the pool (distinct ones while the pool lasts, so memory traffic is a real step's) and
runs the step directly. It writes into the cache: run it before any block is leased. Each shape
runs `repeats` times and the fastest run is kept: on a shared machine interference only adds time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from llmserve.step_cost import StepSample
from llmserve.types import SamplingParams, cdiv
from worker_svc.core.sampler import sample
from worker_svc.model.kv_cache import KvCache
from worker_svc.model.llama import LlamaModel
from worker_svc.model.metadata import build_metadata

_GREEDY = SamplingParams(max_tokens=1, temperature=0.0)


@dataclass(frozen=True)
class StepShape:
    """One timed step: `decode` sequences at `context` cached tokens each, plus a `prefill` chunk."""

    prefill: int
    decode: int
    context: int

    @property
    def kv_tokens_read(self) -> int:
        """What StepTiming counts: the context lengths after the step, summed."""
        return self.decode * (self.context + 1) + self.prefill


def start_up_grid(max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int,
                  kv_tokens: int) -> list[StepShape]:
    """About a dozen shapes that span what the worker's limits allow: prefill chunks of 1/8, 1/2
    and all of the token budget; decode batches of 1, a quarter of and all `max_num_seqs`
    sequences at a short and a long context (within the pool's `kv_tokens`); and the short-context
    batches again beside a quarter-budget prefill chunk. Cheapest first."""
    budget, seqs = max_num_batched_tokens, max_num_seqs
    prefills = sorted({max(1, budget * k // 8) for k in (1, 4, 8)})
    batches = sorted({1, max(1, seqs // 4), seqs})
    short, long = (min(c, max(max_model_len - 2, 1)) for c in (64, 1024))
    mixed = max(1, budget // 4)
    shapes = [StepShape(p, 0, 0) for p in prefills]
    for batch in batches:
        for context in sorted({short, long}):
            if batch * (context + 1) <= kv_tokens:
                shapes.append(StepShape(0, batch, context))
        beside = min(batch, seqs - 1, budget - mixed)  # the prefill is a sequence of the step too
        if beside >= 1 and beside * (short + 1) + mixed <= kv_tokens:
            shapes.append(StepShape(mixed, beside, short))
    return sorted(shapes, key=lambda s: s.kv_tokens_read + 4 * s.prefill)


def time_steps(model: LlamaModel, kv_cache: KvCache, shapes: list[StepShape], repeats: int = 2,
               max_seconds: float = 8.0, clock_ns: Callable[[], int] = time.perf_counter_ns) -> list[StepSample]:
    """The fastest of `repeats` runs of each shape, in order, until `max_seconds` are spent."""
    device = model.embed_tokens.weight.device
    block_size = kv_cache.spec.block_size
    deadline = clock_ns() + int(max_seconds * 1e9)
    samples: list[StepSample] = []
    with torch.inference_mode():
        for shape in shapes:
            if clock_ns() > deadline:
                break
            best = min(_run_once(model, kv_cache, shape, device, block_size, clock_ns) for _ in range(repeats))
            samples.append(StepSample(shape.prefill, shape.decode, shape.kv_tokens_read, best / 1e9))
    return samples


def _block_tables(shape: StepShape, block_size: int, num_blocks: int) -> Iterator[list[int]]:
    """One table per sequence (decodes first), distinct blocks while the pool lasts, then wrapping."""
    next_block = 0
    for length in [shape.context + 1] * shape.decode + ([shape.prefill] if shape.prefill else []):
        need = cdiv(length, block_size)
        yield [(next_block + i) % num_blocks for i in range(need)]
        next_block = (next_block + need) % num_blocks


def _run_once(model: LlamaModel, kv_cache: KvCache, shape: StepShape, device: torch.device, block_size: int,
              clock_ns: Callable[[], int]) -> int:
    """Wall time of one forward pass and sampling of `shape`, nanoseconds."""
    query_lens = [1] * shape.decode + ([shape.prefill] if shape.prefill else [])
    computed = [shape.context] * shape.decode + ([0] if shape.prefill else [])
    tables = list(_block_tables(shape, block_size, kv_cache.num_blocks))
    start = clock_ns()
    meta, positions = build_metadata(query_lens, computed, tables, block_size, device)  # positions: [T]
    rows = torch.tensor([meta.query_start_host[b + 1] - 1 for b in range(len(query_lens))], device=device)  # [B]
    ids = torch.zeros(sum(query_lens), dtype=torch.long, device=device)  # [T]
    logits = model(ids, positions, meta, kv_cache, rows)  # [B, V]
    sample(logits, [_GREEDY] * len(query_lens), [0] * len(query_lens))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock_ns() - start
