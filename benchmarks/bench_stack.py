"""llmserve against Hugging Face transformers, side by side in ONE run on the same model, prompts
and machine (issue 10):

    python benchmarks/bench_stack.py --streams 1 8 32 128 --max-tokens 64 --threads 2 --out bench_out/stack

For each number of concurrent streams (1 = requests one after another), every engine generates
`--max-tokens` greedy tokens per request (EOS ignored, so all do the same work) for the same
prompts (`benchmarks/prompts.py`):
- the full stack through its four services, started here exactly as `llmserve up` does, with the
  benchmark client on the same machine (as a user's would be);
- the same engine in-process (no gRPC, no extra processes): what the hops cost;
- transformers static batching in float32 AND bfloat16; the faster is its "best mode".
Each (engine, streams) runs `--repeats` times after a warm-up, round-robin across the engines, and
keeps the fastest (on a shared machine the least disturbed run); the 1-minute load average is
recorded with each row.
Then the time to first token of one `--prefill-tokens`-token prompt per engine (prefill
throughput), and `gemm_ceiling.py`'s GEMM ceiling at the model's shapes with the engine's decode
and prefill FLOP/s as fractions of it. Writes `results.json` and `results.md` under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler_svc.core.policy import POLICY_NAMES  # noqa: E402

from bench_common import PrefillRow, Row, fastest, load1  # noqa: E402
from prompts import benchmark_prompts, long_prompt_ids  # noqa: E402
from worker_svc.openmp import OPENMP_DEFAULTS  # noqa: E402

if TYPE_CHECKING:  # bench_report loads torch, which must wait for the OpenMP settings (main)
    from bench_report import Report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sequential-requests", type=int, default=8, help="requests of the 1-stream level")
    parser.add_argument("--model", default="default")
    parser.add_argument("--load-format", default="auto", help="dummy: random weights of the model's config")
    parser.add_argument("--dtype", default="auto", help="the llmserve engines' --dtype (transformers runs both)")
    parser.add_argument("--policy", default="fcfs", choices=POLICY_NAMES)
    parser.add_argument("--num-kv-blocks", type=int, default=1024)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512, help="as `llmserve up`")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of every engine (the worker's --num-threads)")
    parser.add_argument("--omp-wait-policy", default=OPENMP_DEFAULTS["OMP_WAIT_POLICY"],
                        help="OMP_WAIT_POLICY of every engine (default: the worker's, worker_svc/openmp.py)")
    parser.add_argument("--gomp-spincount", default=OPENMP_DEFAULTS["GOMP_SPINCOUNT"],
                        help="GOMP_SPINCOUNT of every engine (default: the worker's)")
    parser.add_argument("--engines", default="stack,inproc,hf", help="comma list of stack, inproc, hf")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (engine, streams); the fastest is kept")
    parser.add_argument("--prefill-tokens", type=int, default=1024)
    parser.add_argument("--hf-continuous", action="store_true", help="also run transformers' generate_batch")
    parser.add_argument("--skip-gemm", action="store_true")
    parser.add_argument("--out", default="bench_out/stack")
    return parser.parse_args()


def _prompts(streams: int, args: argparse.Namespace) -> list[str]:
    return benchmark_prompts(args.sequential_requests if streams == 1 else streams)


async def _call(fn, *args):  # type: ignore[no-untyped-def]
    result = fn(*args)
    return await result if asyncio.iscoroutine(result) else result


async def _measure(runners: list, args: argparse.Namespace, long_ids: list[int]) -> tuple[list[Row], list[PrefillRow]]:
    """Every engine at every level, the repeats taken round-robin across engines so that a burst
    of load on the shared machine hits one try of each engine rather than all tries of one."""
    rows, prefill = [], []
    for streams in args.streams:
        prompts = _prompts(streams, args)
        tries: dict[str, list[Row]] = {name: [] for name, _, _ in runners}
        for _ in range(args.repeats):
            for name, run, _ in runners:
                tries[name].append(await _call(run, prompts, streams))
        for name, _, _ in runners:
            rows.append(fastest(tries[name]))
            best = rows[-1]
            print(f"{name} x{streams}: {best.throughput_tok_s:.1f} tok/s (load {best.load1:.2f})", file=sys.stderr)
        # What is done survives a run cut short (a level at 128 streams can take long on a loaded machine).
        (Path(args.out) / "partial.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    times: dict[str, list[float]] = {name: [] for name, _, _ in runners}
    for _ in range(args.repeats):
        for name, _, first_token in runners:
            times[name].append(await _call(first_token, long_ids))
    for name, _, _ in runners:
        prefill.append(PrefillRow(name, len(long_ids), min(times[name]), load1()))
        print(f"{name} prefill {len(long_ids)}: {prefill[-1].tok_s:.0f} tok/s", file=sys.stderr)
    return rows, prefill


def _free_port_run(count: int) -> int:
    """The first of `count` consecutive free loopback ports (the stack's metrics ports)."""
    from llmserve_stack.launch import port_is_free

    for base in range(20000, 60000, 97):
        if all(port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports for the stack's /metrics")


async def run_all(args: argparse.Namespace) -> Report:
    import torch

    from bench_report import Report

    from llmserve_stack.engine import InProcessEngine
    from llmserve_stack.launch import StackConfig, free_port, service_specs
    from llmserve.runtime.channel import open_channel
    from llmserve_stack.supervisor import Stack
    from llmserve.v1 import gateway_pb2_grpc
    from llmserve_runs import INPROC, STACK, InProcessRunner, StackClient

    torch.set_num_threads(args.threads)
    engines = set(args.engines.split(","))
    runners = []  # (name, run(prompts, streams) -> Row, first_token(ids) -> seconds)
    engine = InProcessEngine.build(model=args.model, load_format=args.load_format, num_kv_blocks=args.num_kv_blocks,
                                   max_num_seqs=max(128, *args.streams), dtype=args.dtype, policy=args.policy,
                                   max_num_batched_tokens=args.max_num_batched_tokens)
    long_ids = long_prompt_ids(engine.tokenize, args.prefill_tokens)
    prompt_lens = [len(engine.tokenize(p)) for p in benchmark_prompts(max(args.streams))]
    if "inproc" in engines:
        inproc = InProcessRunner(engine, args.max_tokens)
        engine.generate_all([engine.tokenize("Warm up.")], max_tokens=args.max_tokens)
        runners.append((INPROC, lambda prompts, s: inproc.run([engine.tokenize(p) for p in prompts], s),
                        inproc.time_to_first_token))
    hf_fp32 = None
    if "hf" in engines:
        hf_fp32, hf = _hf_runners(args)
        runners += hf
    async with contextlib.AsyncExitStack() as stack_scope:
        if "stack" in engines:
            metrics_base = _free_port_run(4)  # gateway, scheduler, kvstore, worker-0
            config = StackConfig(port=free_port(), http_port=0, model=args.model, load_format=args.load_format,
                                 dtype=args.dtype, num_kv_blocks=args.num_kv_blocks,
                                 max_num_seqs=max(128, *args.streams), metrics_port=metrics_base,
                                 max_num_batched_tokens=args.max_num_batched_tokens, policy=args.policy,
                                 log_format="text", prefix_cache=False)
            # Prefix caching off: the levels repeat the same prompts and the prefill level the same
            # 1k-token prompt, which a cache would serve from the second try on while the other
            # engines compute them; reuse is measured by bench_prefix_live.py.
            # The worker's torch threads as every other engine's (--num-threads is not a stack setting).
            specs = [dataclasses.replace(s, env={**s.env, "LLMSERVE_NUM_THREADS": str(args.threads)})
                     if s.module == "worker_svc" else s for s in service_specs(config)]
            stack = await stack_scope.enter_async_context(Stack(specs, log_dir=str(Path(args.out) / "logs")))
            channel = await stack_scope.enter_async_context(open_channel(stack.specs[-1].address))
            client = StackClient(gateway_pb2_grpc.GatewayStub(channel), args.max_tokens,
                                 worker_metrics_url=f"http://127.0.0.1:{metrics_base + 3}/metrics")
            await client.run(["Warm up."], 1)
            runners.insert(0, (STACK, client.run, client.time_to_first_token))
        started = time.time()
        rows, prefill = await _measure(runners, args, long_ids)
    if hf_fp32 is not None and args.hf_continuous:
        from hf_runs import run_generate_batch

        extra = run_generate_batch(hf_fp32.net, hf_fp32.tokenizer, _prompts(32, args), args.max_tokens)
        rows += [extra] if extra else []
    gemm = None
    if not args.skip_gemm:
        from gemm_ceiling import measure

        gemm = measure(engine.runner.model.config, repeats=5)
    return Report(args, engine.runner.model.config, str(engine.runner.kv_cache.spec.dtype), rows, prefill, gemm,
                  prompt_lens, started)


def _hf_runners(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """transformers' float32 runner and the (name, run, first_token) of both dtypes."""
    import copy

    import torch
    from hf_runs import HfStaticRunner, load_hf

    fp32, tokenizer = load_hf(args.model, args.load_format)
    runners = [HfStaticRunner(fp32, tokenizer, "float32", args.max_tokens),
               HfStaticRunner(copy.deepcopy(fp32).to(torch.bfloat16), tokenizer, "bfloat16", args.max_tokens)]
    for runner in runners:
        runner.warm_up()
    return runners[0], [(r.name, r.run, r.time_to_first_token) for r in runners]


def main() -> int:
    args = parse_args()
    # Before torch (and OpenMP, which reads them once) loads, so that the in-process engines,
    # transformers and the stack's worker (which inherits them) wait alike.
    if "torch" in sys.modules:
        raise RuntimeError("torch was loaded before the OpenMP settings: the in-process engines would not get them")
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    os.environ["GOMP_SPINCOUNT"] = args.gomp_spincount
    from bench_report import to_markdown
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_all(args))
    table = to_markdown(report)
    print(table)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({
        "rows": [asdict(r) for r in report.rows],
        "prefill": [asdict(p) | {"tok_s": p.tok_s} for p in report.prefill],
        "gemm": [asdict(g) for g in report.gemm or []],
        "args": vars(args),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
