"""Is the worker's forward pass slow because of the worker process, or because of the cores it
shares? (issue 10) Times the same decode step of the worker's model in one process under:

- `alone`: on the main thread, nothing else running (what the in-process engine does);
- `to_thread` and `forward thread`: as the worker service ran it before and runs it now: an
  asyncio loop serving a grpc.aio server, a task on the loop waking every millisecond (the
  worker's plan reader and heartbeats), and the forward pass in `asyncio.to_thread` (whichever
  executor thread is free) or on the worker's one `ForwardThread`;
- `hog D`: alone, with another process burning D of one core in short bursts (`--burst-ms`), as
  the gateway, scheduler, KV store and benchmark client do beside the worker in the stack.

    python benchmarks/forward_contention.py --threads 1 2 --hogs 0.1 0.25 0.5 --batch 32 --context 80

Conditions run round-robin `--rounds` times; the table gives each one's median step (ms) over all
its steps, and per step the process's CPU time and the time its threads were runnable but waiting
for a core (`/proc/self/task/*/schedstat`). Compare within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_svc.forward_thread import ForwardThread  # noqa: E402
from worker_svc.openmp import set_openmp_defaults  # noqa: E402

HOG_CODE = """
import random, sys, time
duty, burst = float(sys.argv[1]), float(sys.argv[2]) / 1e3
idle = burst * (1 - duty) / duty
while True:
    end = time.perf_counter() + burst * random.uniform(0.5, 1.5)
    while time.perf_counter() < end:
        pass
    time.sleep(idle * random.uniform(0.5, 1.5))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hogs", type=float, nargs="*", default=[0.1, 0.25, 0.5], help="duty cycles of one core")
    parser.add_argument("--burst-ms", type=float, default=2.0, help="mean length of one hog burst")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=80)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per condition and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-worker-like", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead: torch-profile N steps on the main thread and N on the forward thread beside "
                             "a grpc.aio server, and print the ops' self CPU time side by side")
    return parser.parse_args()


def decode_step(batch: int, context: int) -> Callable[[], object]:
    """One decode step of the bundled model in the worker's dtype (bench_forward's shapes)."""
    import torch

    from llmserve.model_source import resolve_model
    from worker_svc.kernels.backend import make_backend
    from worker_svc.model.kv_cache import KvCache, KvCacheSpec
    from worker_svc.model.loader import load_model
    from worker_svc.model.metadata import build_metadata
    from worker_svc.model.precision import resolve_dtype

    device = torch.device("cpu")
    dtype = resolve_dtype("auto", device)
    model = load_model(resolve_model("default", "auto"), make_backend("torch"), dtype, device)
    spec = KvCacheSpec.for_model(model.config, 16, dtype)
    per_seq = -(-(context + 1) // 16)
    kv = KvCache(spec, batch * per_seq, device)
    tables = [list(range(b * per_seq, (b + 1) * per_seq)) for b in range(batch)]
    meta, positions = build_metadata([1] * batch, [context] * batch, tables, 16, device)
    ids = torch.randint(0, model.config.vocab_size, (batch,))
    rows = torch.arange(batch)

    def step() -> object:
        with torch.inference_mode():
            return model(ids, positions, meta, kv, rows)

    return step


def run_queue_wait_s() -> float:
    """Seconds this process's live threads spent runnable but waiting for a core."""
    from stack_cpu_share import run_queue_wait_s as of_process

    return of_process("self")


def time_alone(step: Callable[[], object], steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


async def _time_worker_like(step: Callable[[], Any], steps: int, one_thread: bool, keep: bool = False) -> Any:
    """Step times (or with `keep`, the last step's return value) as the worker runs steps."""
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.001)

    tick = asyncio.create_task(ticker())
    thread = ForwardThread() if one_thread else None
    times = []
    try:
        for _ in range(steps):
            start = time.perf_counter()
            kept = await (thread.run(step) if thread is not None else asyncio.to_thread(step))
            times.append(time.perf_counter() - start)
    finally:
        tick.cancel()
        if thread is not None:
            thread.close()
        await server.stop(None)
    return kept if keep else times


def time_with_hog(step: Callable[[], object], steps: int, duty: float, burst_ms: float) -> list[float]:
    hog = subprocess.Popen([sys.executable, "-c", HOG_CODE, str(duty), str(burst_ms)])
    try:
        time.sleep(0.2)
        return time_alone(step, steps)
    finally:
        hog.kill()
        hog.wait()


def profile_ops(step: Callable[[], object], steps: int) -> dict[str, float]:
    """Self CPU ms per op name over `steps` profiled steps, on the calling thread."""
    from torch.profiler import ProfilerActivity, profile

    totals: dict[str, float] = {}
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        for event in prof.key_averages():
            totals[event.key] = totals.get(event.key, 0.0) + event.self_cpu_time_total / 1e3
    return totals


def print_profiles(step: Callable[[], object], steps: int) -> None:
    """The same decode step's ops in-process (main thread) and as the worker runs them."""
    main_thread = profile_ops(step, steps)
    worker = asyncio.run(_time_worker_like(lambda: profile_ops(step, steps), 1, one_thread=True, keep=True))
    print(f"self CPU ms per step (mean of {steps} profiled steps): main thread | forward thread beside grpc.aio")
    print("| op | main thread | forward thread |\n|---|---|---|")
    for name in sorted(main_thread, key=lambda k: -main_thread[k])[:14]:
        print(f"| {name} | {main_thread[name] / steps:.2f} | {worker.get(name, 0.0) / steps:.2f} |")
    print(f"| total | {sum(main_thread.values()) / steps:.2f} | {sum(worker.values()) / steps:.2f} |")


def main() -> int:
    args = parse_args()
    set_openmp_defaults(os.environ)  # the worker's OpenMP settings, before torch loads (worker_svc/openmp.py)
    import torch

    step = decode_step(args.batch, args.context)
    if args.profile:
        torch.set_num_threads(args.threads[-1])
        time_alone(step, 3)
        print_profiles(step, args.profile)
        return 0
    conditions: dict[str, Callable[[], list[float]]] = {"alone": lambda: time_alone(step, args.steps)}
    if not args.no_worker_like:
        conditions["to_thread"] = lambda: asyncio.run(_time_worker_like(step, args.steps, one_thread=False))
        conditions["forward thread"] = lambda: asyncio.run(_time_worker_like(step, args.steps, one_thread=True))
    for duty in args.hogs:
        conditions[f"hog {duty:g}"] = lambda d=duty: time_with_hog(step, args.steps, d, args.burst_ms)
    results: dict[tuple[int, str], list[float]] = {}
    costs: dict[tuple[int, str], list[tuple[float, float]]] = {}  # (CPU s, run-queue wait s) per try
    for threads in args.threads:
        torch.set_num_threads(threads)
        time_alone(step, 3)  # warm up at this thread count
        for _ in range(args.rounds):
            for name, run in conditions.items():
                cpu, waited = time.process_time(), run_queue_wait_s()
                results.setdefault((threads, name), []).extend(run())
                costs.setdefault((threads, name), []).append((time.process_time() - cpu, run_queue_wait_s() - waited))
    load = os.getloadavg()[0]
    print(f"decode step, batch {args.batch}, context {args.context}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} "
          f"GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']}, "
          f"hog bursts ~{args.burst_ms:g} ms; median ms over {args.rounds}x{args.steps} steps; load1 {load:.2f}")
    print("step ms / CPU ms per step / ms per step waiting for a core")
    print("| condition | " + " | ".join(f"{t} thread(s)" for t in args.threads) + " |")
    print("|---|" + "---|" * len(args.threads))
    per_step = args.rounds * args.steps / 1e3
    for name in conditions:
        cells = [f"{statistics.median(results[(t, name)]) * 1e3:.1f} / {sum(c for c, _ in costs[(t, name)]) / per_step:.1f}"
                 f" / {sum(w for _, w in costs[(t, name)]) / per_step:.1f}" for t in args.threads]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
