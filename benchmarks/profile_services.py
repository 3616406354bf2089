"""Where the stack's services spend their CPU per generated token (issue 10): runs the full stack
with the chosen services under cProfile (their event-loop thread, where their per-token Python
work runs), streams `--rounds` runs of `--streams` concurrent requests through the gateway, stops
the stack (the profiles are written as each service exits) and prints each profile's top
functions by own time, per generated token.

    python benchmarks/profile_services.py --profile gateway scheduler --streams 32 --rounds 3

cProfile slows what it profiles (roughly 1.5-2x for this code): read the split, not the totals;
the unprofiled costs are `stack_cpu_share.py`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker_svc.openmp import set_openmp_defaults  # noqa: E402

from prompts import benchmark_prompts  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", nargs="+", default=["gateway", "scheduler"],
                        help="service names to profile (gateway, scheduler, kvstore, worker-0)")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="bench_out/profile")
    return parser.parse_args()


def profiled(spec, out: Path):  # type: ignore[no-untyped-def]
    """`spec` (a launch.ServiceSpec) whose process runs under cProfile, writing `out/<name>.prof`."""
    path = str(out / f"{spec.name}.prof")

    @dataclasses.dataclass(frozen=True)
    class Profiled(type(spec)):  # type: ignore[misc]
        def argv(self, python: str = sys.executable) -> list[str]:
            return [python, "-m", "cProfile", "-o", path, "-m", self.module]

    return Profiled(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)})


async def run(args: argparse.Namespace) -> int:
    from bench_stack import _free_port_run
    from llmserve.runtime.channel import open_channel
    from llmserve.v1 import gateway_pb2_grpc
    from llmserve_runs import StackClient
    from llmserve_stack.launch import StackConfig, free_port, service_specs
    from llmserve_stack.supervisor import Stack

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = StackConfig(port=free_port(), http_port=0, num_kv_blocks=1024, max_num_seqs=max(128, args.streams),
                         metrics_port=_free_port_run(4), max_num_batched_tokens=512, log_format="text")
    specs = []
    for s in service_specs(config):
        if s.module == "worker_svc":
            s = dataclasses.replace(s, env={**s.env, "LLMSERVE_NUM_THREADS": str(args.threads)})
        specs.append(profiled(s, out) if s.name in args.profile else s)
    tokens = 0
    async with Stack(specs, log_dir=str(out / "logs")) as stack, open_channel(stack.specs[-1].address) as channel:
        client = StackClient(gateway_pb2_grpc.GatewayStub(channel), args.max_tokens)
        await client.run(["Warm up."], 1)
        for _ in range(args.rounds):
            row = await client.run(benchmark_prompts(args.streams), args.streams)
            tokens += row.output_tokens
            print(f"{row.throughput_tok_s:.0f} tok/s, load1 {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for name in args.profile:
        report(out / f"{name}.prof", name, tokens, args.top)
    return 0


def report(path: Path, name: str, tokens: int, top: int) -> None:
    """The profile's top functions by own time, in microseconds per generated token."""
    if not path.exists():
        print(f"{name}: no profile (did it exit cleanly?)")
        return
    stats = pstats.Stats(str(path), stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # (file, line, fn) -> (cc, nc, tt, ct, callers)
    total = sum(v[2] for _, v in rows)
    print(f"\n{name}: {total:.2f} s of own time over the run (incl. start-up and idle polling), "
          f"{tokens} tokens; top {top}, µs per token (own / cumulative), calls per token:")
    for (file, line, fn), (_, calls, own, cum, _) in rows[:top]:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"  {own / tokens * 1e6:8.1f} {cum / tokens * 1e6:8.1f} {calls / tokens:6.2f}  {fn} ({where})")


def main() -> int:
    args = parse_args()
    set_openmp_defaults(os.environ)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
