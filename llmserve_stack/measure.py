"""Measures worker steps in-process and fits the simulator's cost model to them:

    python -m llmserve_stack.measure --out cost_cpu.json [--grid cpu] [--device cuda --dtype bfloat16]

Drives worker_svc's StepRunner (the real model code and paged KV cache) over a grid of step
shapes, leasing blocks from a kvstore core LeaseTable as the worker shell does, and fits the rows
with `scheduler_svc.sim.calibrate` (which fits timings from any source, `--from-timings`).

Weights are dummy (seeded random) weights of the model's architecture: step time does not
depend on weight values. `total_ns` covers begin_step + lease + finish_step in one process, so it
lacks the gRPC round trips of a deployed worker (fit `--from-timings` rows dumped by a running
worker to include them). Each shape runs `repeats` times and the fastest run is kept: on a
shared machine, interference only ever adds time, so the minimum is the robust estimate.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scheduler_svc.sim.calibrate import fit_and_save, rows_from_dicts


@dataclass(frozen=True)
class Shape:
    """One measured step shape: `decode` sequences at `context` tokens, plus one prefill chunk."""

    prefill: int
    decode: int
    context: int


@dataclass(frozen=True)
class Grid:
    """Step shapes to measure: pure prefill chunks, decode batches × contexts, and mixed steps."""

    prefill_chunks: tuple[int, ...]
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    mixed_prefill: int
    fill_budget: int  # tokens per (unmeasured) step that fills the decoders' contexts
    max_kv_tokens: int  # skip decode shapes whose batch × context exceeds this

    def shapes(self) -> Iterator[Shape]:
        for p in self.prefill_chunks:
            yield Shape(p, 0, 0)
        for b in self.decode_batches:
            for c in self.decode_contexts:
                if b * c <= self.max_kv_tokens:
                    yield Shape(0, b, c)
                    yield Shape(self.mixed_prefill, b, c)


GRIDS = {
    # A 135M model on a few CPU cores.
    "cpu": Grid((16, 64, 128, 256, 512), (1, 8, 32), (64, 512), 128, 2048, 32 * 512),
    # An 8B model on one H100/A100-class GPU.
    "gpu": Grid((128, 512, 1024, 2048), (1, 16, 64, 128, 256), (256, 1024, 4096), 512, 8192, 160_000),
    "tiny": Grid((8, 32), (1, 4), (16,), 8, 256, 1024),
}


class _Rig:
    """worker_svc's StepRunner on dummy weights, leasing from a kvstore core LeaseTable as the
    worker shell does; `run` times one plan end to end (begin_step + lease + finish_step)."""

    def __init__(self, model: str, device: str, dtype: str, backend: str, grid: Grid, repeats: int,
                 block_size: int, seed: int) -> None:
        import torch

        from kvstore_svc.core.lease_table import LeaseTable
        from llmserve.model_source import resolve_model
        from llmserve.types import cdiv
        from worker_svc.core.runner import RunnerLimits, StepRunner
        from worker_svc.kernels.backend import default_backend_name, make_backend
        from worker_svc.model.kv_cache import KvCache, KvCacheSpec
        from worker_svc.model.loader import load_model
        from worker_svc.model.precision import resolve_dtype

        self.torch_dtype = resolve_dtype(dtype, torch.device(device))
        self.net = load_model(resolve_model(model, load_format="dummy"),
                              make_backend(backend or default_backend_name(device)), self.torch_dtype, device, seed=seed)
        self.spec = KvCacheSpec.for_model(self.net.config, block_size, self.torch_dtype)
        shapes = list(grid.shapes())
        blocks_per_seq = cdiv(max(grid.decode_contexts) + repeats + 2, block_size)
        num_blocks = max(s.decode * cdiv(s.context + repeats + 1, block_size) for s in shapes)
        num_blocks += repeats * cdiv(max(grid.prefill_chunks + (grid.mixed_prefill,)), block_size) + blocks_per_seq + 64
        self.runner = StepRunner(self.net, KvCache(self.spec, num_blocks, device),
                                 RunnerLimits(max(grid.fill_budget, 4096), 1024))
        self.leases = LeaseTable(ttl_s=1e9)
        self.leases.register_pool("calib", num_blocks, block_size, self.spec.bytes_per_block, now=0.0)
        self.rng = random.Random(seed)
        self.step_id = 0

    def run(self, new_reqs: list, scheduled: list, finished: tuple[str, ...] = ()) -> dict:
        """Runs one plan; returns its StepTiming fields, `total_ns` measured around the whole step."""
        from llmserve.plan import BatchPlan

        plan = BatchPlan(self.step_id, tuple(new_reqs), tuple(scheduled), tuple(finished))
        self.step_id += 1
        t0 = time.perf_counter_ns()
        delta = self.runner.begin_step(plan)
        k0 = time.perf_counter_ns()
        result = self.leases.apply("calib", delta.release_request_ids, delta.leases, now=0.0)
        kv_ns = time.perf_counter_ns() - k0
        out = self.runner.finish_step(result.grants)
        total = time.perf_counter_ns() - t0
        t = out.timing
        return {"forward_ns": t.forward_ns, "sample_ns": t.sample_ns, "kv_ns": kv_ns, "total_ns": total,
                "num_prefill_tokens": t.num_prefill_tokens, "num_decode_seqs": t.num_decode_seqs,
                "num_kv_tokens_read": t.num_kv_tokens_read}

    def new(self, rid: str, n: int):  # noqa: ANN201 - a llmserve.plan.NewRequest
        from llmserve.plan import NewRequest
        from llmserve.types import SamplingParams, ServiceClass

        vocab = self.net.config.vocab_size
        return NewRequest(rid, tuple(self.rng.randrange(vocab) for _ in range(n)), n,
                          SamplingParams(max_tokens=16, temperature=0.0), ServiceClass.BEST_EFFORT)

    def deployment(self, device: str) -> dict:
        """What `llmserve up` runs by default with this model on `device`: the geometry the
        simulator takes from a profile (`SimConfig.from_cost_model`)."""
        import torch

        from worker_svc.build import AUTO_STEP_LIMITS, DEFAULT_CPU_KV_GB

        limits = AUTO_STEP_LIMITS["cuda" if torch.device(device).type == "cuda" else "cpu"]
        return {"kv_bytes_per_token": self.spec.bytes_per_block // self.spec.block_size,
                "block_size": self.spec.block_size, "num_blocks": self.spec.num_blocks_for_memory(DEFAULT_CPU_KV_GB),
                "max_num_batched_tokens": limits.max_num_batched_tokens, "max_num_seqs": limits.max_num_seqs,
                "max_model_len": self.net.config.max_model_len}


def _time_shape(rig: _Rig, k: int, shape: Shape, grid: Grid, repeats: int) -> dict:
    """Fills the decoders' contexts (unmeasured), then runs the shape `repeats` times; its fastest run."""
    from llmserve.plan import ScheduledRequest

    ids = [f"s{k}d{i}" for i in range(shape.decode)]
    per_step = max(1, grid.fill_budget // max(shape.context, 1))
    for j in range(0, len(ids), per_step):
        group = ids[j:j + per_step]
        rig.run([rig.new(i, shape.context) for i in group], [ScheduledRequest(i, shape.context, 0, True) for i in group])
    best: dict | None = None
    done: list[str] = []
    for rep in range(repeats):
        sched = [ScheduledRequest(i, 1, shape.context + rep, True) for i in ids]
        pre = []
        if shape.prefill:
            pid = f"s{k}r{rep}p"
            pre = [rig.new(pid, shape.prefill)]
            sched.append(ScheduledRequest(pid, shape.prefill, 0, True))
            done.append(pid)
        row = rig.run(pre, sched)
        if best is None or row["total_ns"] < best["total_ns"]:
            best = row
    assert best is not None
    rig.run([], [], finished=tuple(ids + done))
    return best


def measure_worker_steps(model: str = "default", *, device: str = "cpu", dtype: str = "auto",
                         backend: str = "", grid: str = "cpu", repeats: int = 3, block_size: int = 16,
                         seed: int = 0) -> tuple[list[dict], dict]:
    """Runs every shape of `GRIDS[grid]` `repeats` times on worker_svc in-process; returns one
    dict of StepTiming fields per shape (its fastest run) and the default deployment's geometry."""
    import torch

    from llmserve.plan import ScheduledRequest

    g = GRIDS[grid]
    rig = _Rig(model, device, dtype, backend, g, repeats, block_size, seed)
    with torch.inference_mode():
        # First calls compile kernels and allocate workspaces: run a prefill and a decode unmeasured.
        rig.run([rig.new("warm", 64)], [ScheduledRequest("warm", 64, 0, True)])
        rig.run([], [ScheduledRequest("warm", 1, 64, True)])
        rig.run([], [], finished=("warm",))
        rows = [_time_shape(rig, k, shape, g, repeats) for k, shape in enumerate(g.shapes())]
    return rows, rig.deployment(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmserve_stack.measure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="cost model JSON to write")
    p.add_argument("--name", default="cpu", help="name stored in the JSON")
    p.add_argument("--model", default="default", help="model (llmserve model source; a config folder works)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", help="auto (what the worker picks), float32, bfloat16, ...")
    p.add_argument("--backend", default="", help="attention backend (default: torch on CPU, triton on CUDA)")
    p.add_argument("--grid", default="cpu", choices=tuple(GRIDS), help="step shapes to time")
    p.add_argument("--repeats", type=int, default=3, help="runs per shape (the fastest is kept)")
    p.add_argument("--dump-timings", help="also write the measured rows as JSONL here")
    args = p.parse_args(argv)
    try:
        objs, deployment = measure_worker_steps(args.model, device=args.device, dtype=args.dtype,
                                                backend=args.backend, grid=args.grid, repeats=args.repeats)
        if args.dump_timings:
            Path(args.dump_timings).write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
        source = (f"measured in-process on worker_svc (model {args.model!r}, {args.device}, {args.dtype}, "
                  f"grid {args.grid}, fastest of {args.repeats} runs per shape)")
        model = fit_and_save(rows_from_dicts(objs), args.out, args.name, source, deployment)
    except (ValueError, FileNotFoundError) as exc:
        print(f"measure: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(model.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
