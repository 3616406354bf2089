"""Where the stack's CPU goes beside the worker's forward pass (issue 10): runs the full stack and
the in-process engine side by side at one concurrency and reports

- each process's CPU time over the stack's run (user + system, `/proc/<pid>/stat`): the gateway,
  scheduler, KV store, worker (and its busiest threads by name) and this process, the benchmark
  client; as CPU ms per output token and as a share of one core;
- the worker's mean forward pass per step (its `llmserve_step_phase_seconds_total{phase=forward}`
  over `llmserve_step_seconds_count`) against the in-process engine's (its step timings).

    python benchmarks/stack_cpu_share.py --streams 32 --max-tokens 64 --threads 2 --rounds 2

What the other processes burn while the worker computes is what its OpenMP threads compete with on
a 2-core machine; `forward_contention.py` gives the forward pass the same load as a synthetic hog.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_svc.openmp import set_openmp_defaults  # noqa: E402

from prompts import benchmark_prompts  # noqa: E402
from soak_cpu import TICK_S, stat_cpu_s as cpu_s  # noqa: E402



def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench_out/cpu_share")
    return parser.parse_args()


def faults(path: str) -> int:
    """Minor page faults of a /proc stat file."""
    return int(Path(path).read_text().rsplit(")", 1)[1].split()[7])


def sys_s(path: str) -> float:
    return int(Path(path).read_text().rsplit(")", 1)[1].split()[12]) * TICK_S


def run_queue_wait_s(pid: int | str) -> float:
    """Seconds the threads of a process spent runnable but waiting for a core
    (`/proc/<pid>/task/*/schedstat`, second field): what sharing the cores costs it. Threads that
    exit meanwhile drop out of the sum (the forward's threads live as long as the process)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread exited since the listing
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, by `name/tid`."""
    return {f"{(task / 'comm').read_text().strip()}/{task.name}": cpu_s(str(task / "stat"))
            for task in Path(f"/proc/{pid}/task").iterdir()}


def worker_counters(url: str) -> tuple[float, float]:
    """(forward seconds, steps) so far, from the worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(url, timeout=10).read().decode()
    forward = steps = 0.0
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "llmserve_step_phase_seconds_total" and s.labels.get("phase") == "forward":
                forward += s.value
            elif s.name == "llmserve_step_seconds_count":
                steps += s.value
    return forward, steps


def own_counters() -> tuple[float, int, float, float]:
    """This process's (CPU s, page faults, system CPU s, run-queue wait s)."""
    stat = "/proc/self/stat"
    return cpu_s(stat), faults(stat), sys_s(stat), run_queue_wait_s("self")


def run_in_process(engine: Any, prompts: list[str], max_tokens: int) -> tuple[Any, tuple[float, ...]]:
    """The in-process engine's run of `prompts` and what it cost this process (own_counters' deltas)."""
    ids = [engine.tokenize(p) for p in prompts]
    before = own_counters()
    result = engine.generate_all(ids, max_tokens=max_tokens)
    return result, tuple(b - a for a, b in zip(before, own_counters()))


async def main_async(args: argparse.Namespace) -> None:
    import torch

    from bench_stack import _free_port_run
    from llmserve.runtime.channel import open_channel
    from llmserve.v1 import gateway_pb2_grpc
    from llmserve_runs import StackClient
    from llmserve_stack.engine import InProcessEngine
    from llmserve_stack.launch import StackConfig, free_port, service_specs
    from llmserve_stack.supervisor import Stack

    torch.set_num_threads(args.threads)
    engine = InProcessEngine.build(max_num_seqs=max(128, args.streams))
    prompts = benchmark_prompts(args.streams)
    engine.generate_all([engine.tokenize("Warm up.")], max_tokens=args.max_tokens)
    metrics_base = _free_port_run(4)
    config = StackConfig(port=free_port(), http_port=0, num_kv_blocks=1024, max_num_seqs=max(128, args.streams),
                         metrics_port=metrics_base, max_num_batched_tokens=512, log_format="text")
    specs = [dataclasses.replace(s, env={**s.env, "LLMSERVE_NUM_THREADS": str(args.threads)})
             if s.module == "worker_svc" else s for s in service_specs(config)]
    worker_url = f"http://127.0.0.1:{metrics_base + 3}/metrics"
    async with Stack(specs, log_dir=str(Path(args.out) / "logs")) as stack, \
            open_channel(stack.specs[-1].address) as channel:
        client = StackClient(gateway_pb2_grpc.GatewayStub(channel), args.max_tokens)
        await client.run(["Warm up."], 1)
        pids = {r.spec.name: r.process.pid for r in stack.running}
        worker_pid = next(pid for name, pid in pids.items() if name.startswith("worker"))
        for round_ in range(args.rounds):
            before = {name: cpu_s(f"/proc/{pid}/stat") for name, pid in pids.items()}
            before["client (this process)"] = cpu_s("/proc/self/stat")
            threads_before = thread_cpu(worker_pid)
            wstat = f"/proc/{worker_pid}/stat"
            wf0, ws0, wq0 = faults(wstat), sys_s(wstat), run_queue_wait_s(worker_pid)
            fwd0, steps0 = await asyncio.to_thread(worker_counters, worker_url)
            row = await client.run(prompts, args.streams)
            fwd1, steps1 = await asyncio.to_thread(worker_counters, worker_url)
            after = {name: cpu_s(f"/proc/{pid}/stat") for name, pid in pids.items()}
            after["client (this process)"] = cpu_s("/proc/self/stat")
            wf1, ws1, wq1 = faults(wstat), sys_s(wstat), run_queue_wait_s(worker_pid)
            threads = {k: v - threads_before.get(k, 0.0) for k, v in thread_cpu(worker_pid).items()}
            inproc, (own_cpu, own_f, own_sys, own_q) = run_in_process(engine, prompts, args.max_tokens)
            forwards = [t.forward_ns / 1e6 for t in inproc.step_timings]
            tokens = row.output_tokens
            print(f"\nround {round_ + 1}: {args.streams} streams x {args.max_tokens} tokens, {args.threads} torch "
                  f"threads, load1 {os.getloadavg()[0]:.2f}")
            print(f"stack {row.throughput_tok_s:.0f} tok/s (wall {row.wall_s:.2f} s), worker forward "
                  f"{(fwd1 - fwd0) / max(1.0, steps1 - steps0) * 1e3:.1f} ms/step over {steps1 - steps0:.0f} steps; "
                  f"in-process {inproc.output_tokens / inproc.wall_s:.0f} tok/s, forward "
                  f"{statistics.mean(forwards):.1f} ms/step over {len(forwards)} steps, {own_cpu / inproc.wall_s:.0%} of "
                  "one core")
            print("| process | CPU s | CPU ms / token | share of one core |\n|---|---|---|---|")
            for name in after:
                used = after[name] - before[name]
                print(f"| {name} | {used:.2f} | {used / tokens * 1e3:.2f} | {used / row.wall_s:.0%} |")
            print(f"page faults / step: worker {(wf1 - wf0) / max(1.0, steps1 - steps0):.0f} (system CPU "
                  f"{ws1 - ws0:.2f} s), in-process {own_f / len(forwards):.0f} (system CPU {own_sys:.2f} s)")
            print(f"waiting for a core / step: worker {(wq1 - wq0) / max(1.0, steps1 - steps0) * 1e3:.1f} ms, "
                  f"in-process {own_q / len(forwards) * 1e3:.1f} ms")
            busiest = sorted(threads.items(), key=lambda kv: -kv[1])[:6]
            print("worker threads (CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in busiest))


def main() -> int:
    args = parse_args()
    set_openmp_defaults(os.environ)  # the worker's OpenMP settings, before torch loads (worker_svc/openmp.py)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
