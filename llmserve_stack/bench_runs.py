"""One run of `llmserve bench`: a policy on a workload at one rate scale, simulated (`_sim_one`,
a top-level function so that process pools can run it) or live against a stack; both return
{"metrics", "records", "end_s"} with `scheduler_svc.sim.metrics.summarize`'s metrics."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from llmserve.model_source import ModelSettings
from llmserve.settings import values_from_args


def progress_bar(label: str):
    def show(done: float, total: float) -> None:
        frac = 0.0 if total <= 0 else min(done / total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{label:<28} [{bar:<30}] {frac:6.1%}")
        sys.stderr.flush()

    return show


def sim_one(args: tuple) -> dict:
    """One simulated (policy, rate scale) run; a top-level function so that processes can run it."""
    requests, policy, cost_path, overrides, show_progress, label = args
    from scheduler_svc.sim.cost_model import load_cost_model
    from scheduler_svc.sim.metrics import summarize
    from scheduler_svc.sim.service_gain import service_gain
    from scheduler_svc.sim.simulator import SimConfig, simulate

    cost = load_cost_model(cost_path)
    config = SimConfig.from_cost_model(cost, **overrides)
    horizon = max((r.arrival_s for r in requests), default=1.0)
    bar = progress_bar(label) if show_progress else None
    result = simulate(requests, policy, cost, config, progress=(lambda t: bar(t, horizon)) if bar else None)
    if bar:
        bar(horizon, horizon)
        sys.stderr.write(f"  {result.wall_s:.1f}s wall\n")
    metrics = summarize(result.records, result.stats, service_gain)
    metrics["sim_wall_s"] = round(result.wall_s, 3)
    metrics["sim_requests_per_wall_s"] = round(len(requests) / max(result.wall_s, 1e-9), 1)
    metrics["num_unfinished"] = result.num_unfinished
    metrics["num_failed_steps"] = result.num_failed_steps
    return {"metrics": metrics, "records": result.records, "end_s": result.stats.end_s}


def live_one(requests: Sequence, policy: str, args: argparse.Namespace, label: str) -> dict:
    import asyncio

    from llmserve_stack.live import LiveConfig, replay
    from scheduler_svc.sim.metrics import summarize
    from scheduler_svc.sim.service_gain import service_gain

    async def go() -> tuple:
        bar = progress_bar(label)
        if args.address:
            return await replay(requests, LiveConfig(args.address, run_timeout_s=args.live_timeout,
                                                     stop=args.live_stop, max_tokens=args.live_max_tokens), bar)
        from llmserve_stack.launch import StackConfig, free_port, service_specs
        from llmserve_stack.supervisor import Stack

        config = StackConfig(port=free_port(), http_port=0, policy=policy, log_format="json",
                             **values_from_args(ModelSettings, args))
        async with Stack(service_specs(config), log_dir=str(Path(args.out) / f"logs-{policy}")) as stack:
            return await replay(requests, LiveConfig(stack.specs[-1].address, run_timeout_s=args.live_timeout,
                                                     stop=args.live_stop, max_tokens=args.live_max_tokens), bar)

    wall0 = time.perf_counter()
    records, stats = asyncio.run(go())
    sys.stderr.write("\n")
    metrics = summarize(records, stats, service_gain)
    metrics["live_wall_s"] = round(time.perf_counter() - wall0, 3)
    metrics["num_unfinished"] = sum(1 for r in records if r.finish_s is None)
    return {"metrics": metrics, "records": records, "end_s": stats.end_s}
