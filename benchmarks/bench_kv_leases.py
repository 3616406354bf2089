"""KV store RPCs per step and the step's non-forward overhead, leases held ahead vs a store RPC on
every step that needs blocks, side by side in one run (issue 10, "leases off the critical path").

Setup: the KV store as its own process (as `llmserve up` runs it), a worker and the scheduler
service in this process on 127.0.0.1:0, `--streams` concurrent greedy requests through
`Scheduler.Submit` (`--max-tokens` each, EOS ignored). Modes:

- `per-step`: `--kv-reserve-blocks 0 --kv-sync-interval-s 0`: nothing is held ahead, so every
  step that needs blocks waits for one store RPC (the protocol before leases were held ahead,
  which made one blocking `Apply` per step that changed leases; here a release-only step's
  sync goes in the background);
- `ahead`: the worker's defaults (auto reserve: one step of new tokens at each end, syncs in
  batches within 1 s).

Reported per mode, from the worker's own `StepTiming` of every step: store RPCs the step waited
for (`kv_rpcs`), all store RPCs about the pool per step (syncs on and off the step's path,
heartbeats, declarations), `kv_ns`, `plan_decode_ns`, `encode_ns`, and the non-forward overhead
`total_ns - forward_ns - sample_ns` (plan decode, KV, restores, encode, the shell's awaits), p50
and mean, also as a share of the step.

    .venv/bin/python benchmarks/bench_kv_leases.py [--streams 32] [--max-tokens 64] [--model default]
        [--load-format dummy] [--json out.json]

Numbers from a shared 2-core machine are noisy: compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmserve.runtime.channel import open_channel, wait_healthy  # noqa: E402
from llmserve.types import StepTiming  # noqa: E402
from llmserve.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc  # noqa: E402
from scheduler_svc.config import SchedulerServiceConfig  # noqa: E402
from scheduler_svc.server import SchedulerService, start_scheduler  # noqa: E402
from worker_svc.config import WorkerConfig  # noqa: E402
from worker_svc.server import WorkerServicer
from worker_svc.start import start_worker  # noqa: E402

MODES = {"per-step": dict(kv_reserve_blocks=0, kv_sync_interval_s=0.0), "ahead": {}}


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_mode(mode: str, args: argparse.Namespace, log_dir: Path) -> dict[str, float]:
    address = f"127.0.0.1:{free_port()}"
    store = subprocess.Popen([sys.executable, "-m", "kvstore_svc", "--address", address],
                             stdout=(log_dir / f"kvstore-{mode}.log").open("w"), stderr=subprocess.STDOUT)
    worker = scheduler = None
    try:
        await wait_healthy(address, timeout_s=60)
        worker = await start_worker(WorkerConfig(
            model=args.model, load_format=args.load_format, kvstore_addr=address, worker_id="w0",
            num_kv_blocks=args.num_kv_blocks, **MODES[mode]))
        scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(worker.address,), kvstore_addr=address))
        service, servicer = scheduler.service, worker.service
        assert isinstance(service, SchedulerService) and isinstance(servicer, WorkerServicer)
        timings: list[tuple[StepTiming, int]] = []
        observed = service.observer.step_done

        def record(worker_id: str, timing: StepTiming | None, batch_size: int) -> None:
            if timing is not None:
                timings.append((timing, batch_size))
            observed(worker_id, timing, batch_size)

        service.observer.step_done = record  # type: ignore[method-assign]
        rpcs_before = _pool_rpcs(servicer)
        start = time.perf_counter()
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            counts = await asyncio.gather(*(_generate(stub, f"{mode}-{i}", i, args.max_tokens)
                                            for i in range(args.streams)))
        wall_s = time.perf_counter() - start
        assert all(n == args.max_tokens for n in counts), counts
        rpcs = _pool_rpcs(servicer) - rpcs_before
        return _summary(mode, timings, rpcs, wall_s, servicer.kv.keeper.reserve_blocks, args)
    finally:
        if scheduler is not None:
            await scheduler.stop(0.5)
        if worker is not None:
            await worker.stop(0.5)
        store.terminate()
        store.wait(timeout=30)


def _pool_rpcs(servicer: WorkerServicer) -> int:
    """Every store RPC about the pool so far (checkpoint traffic not counted)."""
    keeper, client = servicer.kv.keeper.stats, servicer.kv.stats
    return keeper.num_syncs + keeper.num_failed_syncs + keeper.num_refused_syncs + client.num_heartbeats \
        + keeper.num_declarations


async def _generate(stub: scheduler_pb2_grpc.SchedulerStub, rid: str, i: int, max_tokens: int) -> int:
    prompt = [(7 * i + 13 * j) % 30000 + 100 for j in range(16 + i % 16)]
    call = stub.Submit(scheduler_pb2.SubmitRequest(
        request_id=rid, prompt_token_ids=prompt,
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
        slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT)))
    n = 0
    async for event in call:
        n += len(event.token_ids)
    return n


def _summary(mode: str, timings: list[tuple[StepTiming, int]], rpcs: int, wall_s: float, reserve: int,
             args: argparse.Namespace) -> dict[str, float]:
    steps = [t for t, _ in timings]
    full = [t for t, batch in timings if batch >= args.streams]  # steady decode at full batch
    overhead = [(t.total_ns - t.forward_ns - t.sample_ns) / 1e6 for t in steps]
    share = [(t.total_ns - t.forward_ns - t.sample_ns) / t.total_ns for t in full if t.total_ns]
    return {
        "mode": mode, "reserve_blocks": reserve, "steps": len(steps), "wall_s": wall_s,
        "waited_rpcs_per_step": sum(t.kv_rpcs for t in steps) / len(steps),
        "steps_waiting_for_store": sum(1 for t in steps if t.kv_rpcs),
        "pool_rpcs_per_step": rpcs / len(steps),
        "kv_ms_p50": pct([t.kv_ns / 1e6 for t in steps], 0.5),
        "kv_ms_mean": statistics.fmean(t.kv_ns / 1e6 for t in steps),
        "plan_decode_ms_p50": pct([t.plan_decode_ns / 1e6 for t in steps], 0.5),
        "encode_ms_p50": pct([t.encode_ns / 1e6 for t in steps], 0.5),
        "forward_ms_p50": pct([t.forward_ns / 1e6 for t in full], 0.5),
        "overhead_ms_p50": pct(overhead, 0.5),
        "overhead_ms_mean": statistics.fmean(overhead),
        "overhead_share_p50_full_batch": pct(share, 0.5),
    }


def table(rows: list[dict[str, float]]) -> str:
    head = ("| mode | reserve/end | steps | steps waiting for the store | store RPCs waited/step | all pool RPCs/step "
            "| kv ms p50 / mean | plan decode ms p50 | encode ms p50 | forward ms p50 (full batch) "
            "| non-forward ms p50 / mean | non-forward share p50 (full batch) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['reserve_blocks']} | {r['steps']} | {r['steps_waiting_for_store']} "
            f"| {r['waited_rpcs_per_step']:.3f} | {r['pool_rpcs_per_step']:.3f} "
            f"| {r['kv_ms_p50']:.3f} / {r['kv_ms_mean']:.3f} | {r['plan_decode_ms_p50']:.3f} "
            f"| {r['encode_ms_p50']:.3f} "
            f"| {r['forward_ms_p50']:.1f} | {r['overhead_ms_p50']:.2f} / {r['overhead_ms_mean']:.2f} "
            f"| {100 * r['overhead_share_p50_full_batch']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="default")
    parser.add_argument("--load-format", default="dummy", help="dummy: random weights of the model's shapes")
    parser.add_argument("--num-kv-blocks", type=int, default=1024)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        for mode in args.modes:
            rows.append(asyncio.run(run_mode(mode, args, Path(log_dir))))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
