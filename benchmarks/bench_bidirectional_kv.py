"""Bidirectional KV with checkpointing vs recompute-only preemption, under KV pressure from a
best-effort backlog, side by side in one run:

- `sim`: the discrete-event simulator (the real scheduler core on a GPU-class cost model, H100 +
  Llama-3-8B profile) with a simulated host tier (`scheduler_svc/sim/host_tier.py`);
- `live`: the real services on 127.0.0.1:0 (KV store, one worker on a tiny random Llama on CPU,
  the scheduler), scaled down, requests through `Scheduler.Submit`.

Variants: `fcfs-recompute` (vLLM's default), `bros-recompute` (BROS ordering, BE victims
recomputed), `bros-checkpoint` (BROS, BE victims checkpointed to the host tier and restored).
Reported per variant: RT TTFT p50/p99, BE output throughput, host-tier bytes moved, recomputed
tokens (KV computed again after a preemption), preemptions.

    .venv/bin/python benchmarks/bench_bidirectional_kv.py [--only sim|live] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler_svc.core.policy.base import PreemptionMode  # noqa: E402
from scheduler_svc.core.policy.bros import BrosPolicy  # noqa: E402
from scheduler_svc.sim.cost_model import load_cost_model  # noqa: E402
from scheduler_svc.sim.simulator import SimConfig, Simulation  # noqa: E402
from scheduler_svc.sim.workload import BEST_EFFORT, REAL_TIME, WorkloadRequest  # noqa: E402

VARIANTS = (("fcfs-recompute", "fcfs", False), ("bros-recompute", "bros", False), ("bros-checkpoint", "bros", True))


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@contextmanager
def recompute_only(enabled: bool):
    """BROS with recompute preemption for the `-recompute` variant (fcfs always recomputes)."""
    if not enabled:
        yield
        return
    with mock.patch.object(BrosPolicy, "preemption_mode", lambda self, victim: PreemptionMode.RECOMPUTE):
        yield


# ---- simulator ---------------------------------------------------------------------------------
def sim_workload(seed: int, num_be: int, be_prompt: int, be_output: int, rt_rate: float, duration_s: float,
                 rt_prompt: int, rt_output: int) -> list[WorkloadRequest]:
    rng = random.Random(seed)
    requests = [WorkloadRequest(f"be{i}", arrival_s=0.01 * i, prompt_tokens=rng.randint(be_prompt // 2, be_prompt),
                                output_tokens=rng.randint(be_output // 2, be_output), cls=BEST_EFFORT)
                for i in range(num_be)]
    t, i = 2.0, 0
    while t < duration_s:
        requests.append(WorkloadRequest(f"rt{i}", arrival_s=t, prompt_tokens=rng.randint(rt_prompt // 2, rt_prompt),
                                        output_tokens=rng.randint(rt_output // 2, rt_output), cls=REAL_TIME,
                                        ttft_ms=500.0, tpot_ms=100.0))
        t += rng.expovariate(rt_rate)
        i += 1
    return requests


def run_sim(args: argparse.Namespace) -> dict[str, dict]:
    cost = load_cost_model("h100_llama3_8b")
    kv_bytes_per_token = int(cost.extra.get("kv_bytes_per_token", 131072))
    workload = sim_workload(args.seed, args.sim_be, 2000, 1200, args.sim_rt_rate, args.sim_duration_s, 1000, 200)
    results = {}
    for name, policy, checkpoint in VARIANTS:
        # Every variant runs with the book and the host tier (it counts recomputed tokens); the
        # -recompute variants never ask for a checkpoint.
        config = SimConfig.from_cost_model(cost, policy_options={"aging_s": 60.0} if policy == "bros" else {},
                                           pipeline_depth=1, kv_bytes_per_token=kv_bytes_per_token,
                                           host_tier_bytes=int(args.sim_host_tier_gb * 2**30),
                                           cost_model_as_prior=True)
        sim = Simulation(workload, policy, cost, config)
        assert sim.host_tier is not None and sim.core.checkpoints is not None
        with recompute_only(not checkpoint):
            result = sim.run()
        end = result.stats.end_s
        rt = [r for r in result.records if r.request.cls == REAL_TIME]
        be = [r for r in result.records if r.request.cls == BEST_EFFORT]
        be_tokens = sum(len(r.token_times) for r in be)
        be_end = max((r.finish_s or end) for r in be)
        book = sim.core.checkpoints.stats
        tier = sim.host_tier
        results[name] = dict(
            rt_ttft_p50_ms=1000 * pct([r.ttft_s(end) for r in rt], 0.50),
            rt_ttft_p99_ms=1000 * pct([r.ttft_s(end) for r in rt], 0.99),
            rt_slo_attained=sum(r.rt_attained() for r in rt) / max(1, len(rt)),
            be_tokens_per_s=be_tokens / be_end if be_end else 0.0,
            be_makespan_s=be_end,
            host_bytes_moved=tier.stats.bytes_saved + tier.stats.bytes_restored,
            transfer_s=tier.stats.transfer_s,
            recomputed_tokens=book.recomputed_tokens,
            preemptions=sim.core.num_preemptions,
            checkpoints=book.num_checkpoints, restores=book.num_restores, failed_restores=book.num_failed_restores,
            unfinished=result.num_unfinished, num_rt=len(rt), num_be=len(be), wall_s=result.wall_s,
        )
        print(f"  sim {name}: done in {result.wall_s:.1f}s wall", file=sys.stderr)
    return results


# ---- live stack --------------------------------------------------------------------------------
async def run_live_variant(model_dir: str, policy: str, checkpoint: bool, args: argparse.Namespace) -> dict:
    """One variant against an in-process kvstore, worker and scheduler (on port 0)."""
    from kvstore_svc.config import KvStoreConfig
    from kvstore_svc.server import start_kvstore
    from llmserve.runtime.channel import open_channel
    from llmserve.v1 import scheduler_pb2_grpc
    from scheduler_svc.config import SchedulerServiceConfig
    from scheduler_svc.server import start_scheduler
    from worker_svc.config import WorkerConfig
    from worker_svc.start import start_worker

    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=10.0, host_tier_bytes=256 << 20))
    worker = await start_worker(WorkerConfig(
        model=model_dir, kvstore_addr=kvstore.address, worker_id="bench-w0", device="cpu", dtype="float32",
        num_kv_blocks=args.live_blocks, block_size=4, max_num_batched_tokens=128, max_num_seqs=16, num_threads=1))
    scheduler = None
    try:
        with recompute_only(not checkpoint):
            scheduler = await start_scheduler(SchedulerServiceConfig(
                worker_addrs=(worker.address,), kvstore_addr=kvstore.address, policy=policy,
                policy_options=(("aging_s", 60.0),) if policy == "bros" else (), checkpoint_preemption=True))
            async with open_channel(scheduler.address) as channel:
                t0, rt_results, be_results = await _replay(scheduler_pb2_grpc.SchedulerStub(channel), args)
        be_end = max(r[3] for r in be_results) - t0
        book = scheduler.service.checkpoints.stats
        sender = worker.service.checkpoints.stats
        return dict(
            rt_ttft_p50_ms=1000 * pct([r[1] for r in rt_results], 0.50),
            rt_ttft_p99_ms=1000 * pct([r[1] for r in rt_results], 0.99),
            be_tokens_per_s=sum(r[2] for r in be_results) / be_end,
            be_makespan_s=be_end,
            host_bytes_moved=sender.bytes_sent + sender.bytes_restored,
            recomputed_tokens=book.recomputed_tokens,
            preemptions=book.num_checkpoints + book.num_recompute_preemptions,
            checkpoints=book.num_checkpoints, restores=book.num_restores, failed_restores=book.num_failed_restores,
            num_rt=len(rt_results), num_be=len(be_results),
        )
    finally:
        if scheduler is not None:
            await scheduler.stop(0.5)
        await worker.stop(0.5)
        await kvstore.stop(0.5)


# (submitted at, time to first token, tokens, ended at), perf_counter seconds.
LiveResult = tuple[float, float, int, float]


async def _replay(stub, args: argparse.Namespace) -> tuple[float, list[LiveResult], list[LiveResult]]:  # noqa: ANN001
    """BE requests at once, then RT requests at exponential gaps; (start, RT results, BE results)."""
    from llmserve.v1 import common_pb2

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    be = [asyncio.create_task(_submit(stub, rng, f"be{i}", common_pb2.SERVICE_CLASS_BEST_EFFORT, 48, 48))
          for i in range(args.live_be)]
    await asyncio.sleep(1.0)
    rt = []
    for i in range(args.live_rt):
        rt.append(asyncio.create_task(_submit(stub, rng, f"rt{i}", common_pb2.SERVICE_CLASS_REAL_TIME, 24, 8)))
        await asyncio.sleep(rng.expovariate(1 / args.live_rt_gap_s))
    return t0, list(await asyncio.gather(*rt)), list(await asyncio.gather(*be))


async def _submit(stub, rng: random.Random, rid: str, cls: int, prompt_len: int, n: int) -> LiveResult:  # noqa: ANN001
    """One request of `prompt_len` random tokens and `n` greedy output tokens (RT: 1 s TTFT, 500 ms TPOT)."""
    from llmserve.v1 import common_pb2, scheduler_pb2

    slo = common_pb2.Slo(service_class=cls)
    if cls == common_pb2.SERVICE_CLASS_REAL_TIME:
        slo.ttft_ms, slo.tpot_ms = 1000, 500
    request = scheduler_pb2.SubmitRequest(
        request_id=rid, prompt_token_ids=[rng.randint(3, 95) for _ in range(prompt_len)], slo=slo,
        sampling=common_pb2.SamplingParams(max_tokens=n, temperature=0.0, seed=1, ignore_eos=True))
    start = time.perf_counter()
    first, count = math.nan, 0
    async for event in stub.Submit(request, timeout=600):
        if event.token_ids and math.isnan(first):
            first = time.perf_counter() - start
        count += len(event.token_ids)
    return start, first, count, time.perf_counter()


def run_live(args: argparse.Namespace) -> dict[str, dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tests.unit.worker.helpers import save_tiny_checkpoint

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        save_tiny_checkpoint("llama", Path(folder))
        for name, policy, checkpoint in VARIANTS:
            results[name] = asyncio.run(run_live_variant(folder, policy, checkpoint, args))
            print(f"  live {name}: done", file=sys.stderr)
    return results


def table(title: str, results: dict[str, dict]) -> str:
    cols = ("rt_ttft_p50_ms", "rt_ttft_p99_ms", "be_tokens_per_s", "host_bytes_moved", "recomputed_tokens",
            "preemptions", "checkpoints", "restores")
    lines = [f"### {title}", "", "| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in results.items():
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:.1f}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    base, ours = results.get("fcfs-recompute"), results.get("bros-checkpoint")
    if base and ours:
        lines += ["", f"RT TTFT p99 fcfs-recompute / bros-checkpoint: {base['rt_ttft_p99_ms'] / ours['rt_ttft_p99_ms']:.1f}x; "
                  f"BE throughput bros-checkpoint / fcfs-recompute: {ours['be_tokens_per_s'] / base['be_tokens_per_s']:.2f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("sim", "live"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    parser.add_argument("--sim-be", type=int, default=300)
    parser.add_argument("--sim-rt-rate", type=float, default=2.0)
    parser.add_argument("--sim-duration-s", type=float, default=60.0)
    parser.add_argument("--sim-host-tier-gb", type=float, default=64.0)
    parser.add_argument("--live-blocks", type=int, default=96)
    parser.add_argument("--live-be", type=int, default=8)
    parser.add_argument("--live-rt", type=int, default=12)
    parser.add_argument("--live-rt-gap-s", type=float, default=0.4)
    args = parser.parse_args()
    out: dict[str, dict] = {}
    if args.only in (None, "sim"):
        out["sim"] = run_sim(args)
        print(table("Simulator (H100, Llama-3-8B cost model)", out["sim"]))
    if args.only in (None, "live"):
        out["live"] = run_live(args)
        print(table("Live stack (CPU, tiny Llama, scaled down)", out["live"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
