"""Live runs of the suite: one local stack per policy (`llmserve_stack`: kvstore, worker,
scheduler, gateway as processes, the bundled SmolLM2-135M), every cell replayed on it in order
through the public Gateway API (`llmserve_stack.live.replay`), the dedicated runs on fcfs's stack.

A stack serves its cells one after another (its policy keeps what it learnt online: cost model,
tempo's lengths, as a server that runs for a while would), and each stack's worker calibrated
itself at start: its `Worker.Describe` step-time model is recorded for the simulator's prediction.
Each run also records the preemptions the scheduler made during it and the steps its worker ran
(its GetStats, before and after): `num_steps` and `end_s` give the live step cadence, which the
simulator's own `num_steps` over its `end_s` is compared with.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmserve.runtime.channel import open_channel
from llmserve.v1 import scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc
from llmserve_stack.launch import StackConfig, free_port, service_specs
from llmserve_stack.live import LiveConfig, replay
from llmserve_stack.supervisor import Stack
from scheduler_svc.core.policy import COST_MODEL_POLICIES
from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain

from benchmarks.sched_live_suite.workloads import DEDICATED, DRAIN_S, MAX_OUTPUT, Cell, cell_requests

def describe(info: worker_pb2.WorkerInfo) -> dict:
    """What the suite keeps of a worker's Describe: geometry and the start-up calibration."""
    c = info.step_cost
    out = {"num_blocks": info.num_blocks, "block_size": info.block_size, "dtype": info.dtype,
           "max_num_batched_tokens": info.max_num_batched_tokens, "max_num_seqs": info.max_num_seqs,
           "max_model_len": info.max_model_len, "bytes_per_block": info.bytes_per_block}
    if info.HasField("step_cost"):
        out["step_cost"] = {"a_s": c.a_s, "b_s_per_prefill_token": c.b_s_per_prefill_token,
                            "c_s_per_decode_seq": c.c_s_per_decode_seq, "d_s_per_kv_token": c.d_s_per_kv_token,
                            "num_samples": c.num_samples, "r2": c.r2, "median_rel_error": c.median_rel_error,
                            "calibration_s": c.calibration_s}
    return out


async def run_policy(policy: str, runs: list[tuple[Cell, str]], out: Path,
                     on_result: Callable[[Cell, str, dict], None], slack_bank_tpots: float = 0.0) -> dict:
    """Starts a stack serving `policy` and replays `runs` ((cell, fcfs | bros | tempo | dedicated))
    on it in order; returns the worker's description. `slack_bank_tpots`: the scheduler's
    --slack-bank-tpots for bros and tempo (fcfs has none)."""
    bank = slack_bank_tpots if policy in COST_MODEL_POLICIES else 0.0
    config = StackConfig(port=free_port(), http_port=0, policy=policy, log_format="json", model="default",
                         slack_bank_tpots=bank)
    async with Stack(service_specs(config), log_dir=str(out / f"logs-{policy}")) as stack:
        worker = next(s for s in stack.specs if s.name.startswith("worker"))
        async with open_channel(worker.address) as channel:
            info = describe(await worker_pb2_grpc.WorkerStub(channel).Describe(worker_pb2.DescribeRequest(),
                                                                               timeout=30.0))
        gateway = stack.specs[-1].address
        scheduler = next(s for s in stack.specs if s.name == "scheduler").address
        for cell, label in runs:
            requests = cell_requests(cell, dedicated=label == DEDICATED)
            window = max(r.arrival_s for r in requests)
            live = LiveConfig(gateway, max_tokens=MAX_OUTPUT, run_timeout_s=window + DRAIN_S)
            wall0 = time.perf_counter()
            preempted, stepped = await _counters(scheduler)
            records, stats = await replay(requests, live)
            metrics = summarize(records, stats, service_gain)
            preempted_after, stepped_after = await _counters(scheduler)
            metrics["preemptions"] = preempted_after - preempted
            metrics["num_steps"] = stepped_after - stepped
            metrics["live_wall_s"] = round(time.perf_counter() - wall0, 2)
            metrics["num_unfinished"] = sum(1 for r in records if r.finish_s is None)
            metrics["num_requests"] = len(requests)
            on_result(cell, label, metrics)
            print(f"live {cell.name:<20} {label:<9} RT {_pct(metrics['rt_slo_attainment'])} "
                  f"BE job {_num(metrics['be_throughput_run_tok_s'])} tok/s  preempt {metrics['preemptions']}  "
                  f"steps {metrics['num_steps']}  {metrics['live_wall_s']:.0f}s", file=sys.stderr)
    return info


async def _counters(scheduler: str) -> tuple[int, int]:
    """Preemptions the scheduler has made and steps its workers ran since it started (GetStats)."""
    async with open_channel(scheduler) as channel:
        stats = await scheduler_pb2_grpc.SchedulerStub(channel).GetStats(scheduler_pb2.GetStatsRequest(), timeout=10.0)
    return int(stats.num_preemptions), int(stats.num_steps)


def run_live(cells: list[Cell], policies: tuple[str, ...], out: Path,
             on_result: Callable[[Cell, str, dict], None], slack_bank_tpots: float = 0.0) -> dict[str, dict]:
    """Every cell under every policy, plus the dedicated runs on fcfs's stack; returns each
    stack's worker description by policy."""
    infos: dict[str, dict] = {}
    for policy in policies:
        runs = [(cell, policy) for cell in cells]
        if policy == "fcfs":
            runs += [(cell, DEDICATED) for cell in cells]
        infos[policy] = asyncio.run(run_policy(policy, runs, out, on_result, slack_bank_tpots))
    return infos


def _pct(v: float | None) -> str:
    return "  -  " if v is None else f"{v:5.1%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"
