"""Scheduling overhead: wall time of one `Scheduler.schedule()` call per policy, with R requests
running (decoding) and 10,000 waiting, under pipelining (two plans in flight).

    .venv/bin/python benchmarks/schedule_overhead.py [--running 64 256 1024] [--waiting 10000]
        [--steps 300] [--policies NAME ...] [--json out.json]   # default: every policy

Requests are a third each real-time (ttft 1 s, tpot 100 ms), deadline (30 s) and best-effort; the
virtual clock advances 10 ms per step. `max_num_seqs = R` keeps the waiting requests waiting, so
each step is R decodes plus whatever the policy does with the queue. Only schedule() is timed
(update() is reported separately). Target: p50 < 1 ms at 256 running.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import statistics
import time

from scheduler_svc.core import (
    ManualClock,
    Request,
    SamplingParams,
    Scheduler,
    SchedulerConfig,
    ServiceClass,
    Slo,
    StepResult,
    make_policy,
)
from scheduler_svc.core.policy import POLICY_NAMES

_SLOS = (
    Slo(ServiceClass.REAL_TIME, ttft_ms=1000.0, tpot_ms=100.0),
    Slo(ServiceClass.DEADLINE, deadline_ms=30_000.0),
    Slo(ServiceClass.BEST_EFFORT),
)


def _request(i: int, now: float) -> Request:
    return Request(f"r{i}", tuple(range(32)), SamplingParams(max_tokens=4000, ignore_eos=True),
                   _SLOS[i % 3], tenant=f"t{i % 4}", arrival_s=now)


def measure(policy_name: str, num_running: int, num_waiting: int, steps: int) -> dict[str, float]:
    config = SchedulerConfig(num_blocks=1 << 20, block_size=16, max_num_batched_tokens=num_running + 2048,
                             max_num_seqs=num_running, max_model_len=8192, max_num_waiting=num_waiting + num_running)
    clock = ManualClock(1_000.0)
    sched = Scheduler(config, make_policy(policy_name), clock)
    for i in range(num_running + num_waiting):
        sched.add_request(_request(i, clock.now()))
    inflight: collections.deque = collections.deque()
    schedule_s: list[float] = []
    update_s: list[float] = []
    gc.collect()
    for step in range(steps + 20):
        while len(inflight) < 2:
            t0 = time.perf_counter()
            plan = sched.schedule()
            dt = time.perf_counter() - t0
            if step >= 20:  # after the prefills of the first admissions
                schedule_s.append(dt)
            inflight.append(plan)
        plan = inflight.popleft()
        clock.advance(0.010)
        result = StepResult(plan.step_id, tuple((s.request_id, 7) for s in plan.scheduled if s.sample))
        t0 = time.perf_counter()
        sched.update(result)
        update_s.append(time.perf_counter() - t0)
    running = sched.stats().num_running
    return {
        "policy": policy_name, "running": running, "waiting": sched.stats().num_waiting,
        "schedule_p50_ms": 1e3 * statistics.median(schedule_s),
        "schedule_p99_ms": 1e3 * statistics.quantiles(schedule_s, n=100)[98],
        "update_p50_ms": 1e3 * statistics.median(update_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--policies", nargs="+", default=list(POLICY_NAMES), choices=POLICY_NAMES)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    rows = []
    print(f"{'policy':<9} {'running':>7} {'waiting':>7} {'sched p50 ms':>12} {'sched p99 ms':>12} {'update p50 ms':>13}")
    for name in args.policies:
        for r in args.running:
            row = measure(name, r, args.waiting, args.steps)
            rows.append(row)
            print(f"{name:<9} {row['running']:>7} {row['waiting']:>7} {row['schedule_p50_ms']:>12.3f} "
                  f"{row['schedule_p99_ms']:>12.3f} {row['update_p50_ms']:>13.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
