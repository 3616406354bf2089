"""Soak with faults: N concurrent streams for M minutes against a stack run as `llmserve up` runs
it (`Stack` + `Stack.supervise`, its default restart policy), with one random service SIGKILLed
every K seconds after a warm-up (each kind of service once per round of faults, in random order).

    python benchmarks/soak.py --streams 200 --minutes 10 --fault-every-s 60 --out bench_out/soak
    python benchmarks/soak.py --streams 50 --minutes 3 --fault-every-s 30 --out bench_out/soak-short

Each stream sends greedy requests (EOS ignored, `--max-tokens` each, prompts from
benchmarks/prompts.py) one after another through one gateway client with the documented retry
policy (`gateway.client.RETRY_SERVICE_CONFIG`); a stream that ends UNAVAILABLE after some tokens
(its gateway died) is resent by the client, as docs/reliability.md tells clients to. Reports:
- requests accepted (a token came back), completed, lost (accepted, never completed), completed
  with tokens that differ from the undisturbed reference, and interrupted streams resent;
- TTFT p50/p99 as the client sees it (from a request's first attempt to its first token);
- per fault: the service, how long until it was SERVING again and until every stream open at the
  kill received a token again;
- RSS of every process over time (rss.png) and its growth once warm.
Writes summary.json, results.md and rss.png under --out (the services' logs under --out/logs).
The targets (docs/reliability.md): 0 accepted requests lost, RSS growth under 10% after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This checkout's code, not whatever the environment has installed (the services it starts run
# from the working directory too: start it from the repository root).
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from gateway.client import GatewayClient, build_request  # noqa: E402
from llmserve.errors import LlmServeError, UnavailableError  # noqa: E402
from llmserve.runtime.channel import wait_healthy  # noqa: E402
from llmserve_stack.launch import StackConfig, free_port, service_specs  # noqa: E402
from llmserve_stack.restarts import RestartPolicy  # noqa: E402
from llmserve_stack.supervisor import Stack  # noqa: E402
from prompts import benchmark_prompts  # noqa: E402
from soak_cpu import CpuLedger, cpu_markdown  # noqa: E402
from soak_report import Fault, Outcome, RssSample, markdown, plot_rss, summarize  # noqa: E402

# The services a fault may hit; "worker" is any one of the workers.
FAULTS = ("worker", "scheduler", "gateway", "kvstore")
DEFAULT_FAULTS = FAULTS
GIVE_UP_S = 120.0  # a request not completed this long after its first attempt counts as lost


@dataclass
class Load:
    """What the streams share: their outcomes and which request each has open."""

    t0: float
    end: float
    outcomes: list[Outcome] = field(default_factory=list)
    open: dict[int, Outcome] = field(default_factory=dict)  # stream index -> its open request
    last_token_s: dict[int, float] = field(default_factory=dict)  # stream index -> its last token

    def now(self) -> float:
        return time.monotonic() - self.t0


async def _one_request(client: GatewayClient, load: Load, stream: int, prompt_index: int, prompt: str,
                       max_tokens: int) -> None:
    outcome = Outcome(prompt_index, load.now())
    load.outcomes.append(outcome)
    load.open[stream] = outcome
    try:
        while True:
            outcome.attempts += 1
            tokens: list[int] = []
            try:
                async for chunk in client.generate_request(build_request(
                        prompt, max_tokens=max_tokens, temperature=0.0, ignore_eos=True), timeout_s=GIVE_UP_S):
                    if chunk.token_ids:
                        now = load.now()
                        outcome.first_token_s = outcome.first_token_s if outcome.first_token_s is not None else now
                        load.last_token_s[stream] = now
                        tokens.extend(chunk.token_ids)
                outcome.tokens, outcome.finished_s = tokens, load.now()
                return
            except UnavailableError as err:
                outcome.interrupted += 1 if tokens else 0
                if load.now() - outcome.started_s > GIVE_UP_S:
                    outcome.error = f"gave up: {err}"
                    return
                await asyncio.sleep(0.2)
            except LlmServeError as err:
                outcome.error = f"{type(err).__name__}: {err}"
                return
    finally:
        load.open.pop(stream, None)


async def _stream(client: GatewayClient, load: Load, stream: int, prompts: list[str], max_tokens: int) -> None:
    count = 0
    while time.monotonic() < load.end:
        index = (stream + count) % len(prompts)
        await _one_request(client, load, stream, index, prompts[index], max_tokens)
        count += 1


async def _sample_rss(stack: Stack, load: Load, samples: list[RssSample], cpu: CpuLedger, period_s: float) -> None:
    while True:
        for service in list(stack.running):
            cpu.sample(service.spec.name, service.process.pid)
            try:
                with open(f"/proc/{service.process.pid}/status") as status:
                    kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                continue  # exited between the listing and the read
            samples.append(RssSample(round(load.now(), 2), service.spec.name, service.process.pid, kb / 1024))
        await asyncio.sleep(period_s)


async def _measure(stack: Stack, load: Load, fault: Fault, old_pid: int, at_kill: dict[int, Outcome]) -> None:
    """Fills in the fault's restart and resume times (up to GIVE_UP_S)."""
    killed = fault.killed_at_s

    async def restarted() -> None:
        while load.now() - killed < GIVE_UP_S:
            service = next(s for s in stack.running if s.spec.name == fault.service)
            if service.process.pid != old_pid and not service.exited.done():
                try:
                    await wait_healthy(service.spec.address, timeout_s=GIVE_UP_S)
                except TimeoutError:
                    return
                fault.restarted_s = round(load.now() - killed, 2)
                return
            await asyncio.sleep(0.05)

    async def resumed() -> None:
        while load.now() - killed < GIVE_UP_S:
            waiting = [s for s, o in at_kill.items()
                       if load.open.get(s) is o and load.last_token_s.get(s, -1.0) <= killed]
            if not waiting:
                fault.resumed_s = round(load.now() - killed, 2)
                return
            await asyncio.sleep(0.05)

    await asyncio.gather(restarted(), resumed())


async def _inject(stack: Stack, load: Load, faults: list[Fault], kinds: list[str], warmup_s: float,
                  every_s: float, rng: random.Random) -> None:
    next_at = load.t0 + warmup_s
    rounds: list[str] = []
    while next_at < load.end:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if not rounds:  # every kind once per round, in random order: a short run still hits each
            rounds = rng.sample(kinds, len(kinds))
        kind = rounds.pop()
        names = [s.spec.name for s in stack.running if s.spec.name.startswith(kind)]
        name = rng.choice(names)
        service = next(s for s in stack.running if s.spec.name == name)
        fault = Fault(name, round(load.now(), 2))
        at_kill = dict(load.open)
        os.kill(service.process.pid, signal.SIGKILL)
        faults.append(fault)
        print(f"[{fault.killed_at_s:7.1f}s] killed {name} (pid {service.process.pid})", file=sys.stderr, flush=True)
        await _measure(stack, load, fault, service.process.pid, at_kill)
        print(f"          {name}: SERVING after {fault.restarted_s}s, streams resumed after {fault.resumed_s}s",
              file=sys.stderr, flush=True)
        next_at = max(next_at + every_s, time.monotonic())  # the next fault hits a recovered stack


async def run(args: argparse.Namespace) -> dict[str, object]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = StackConfig(num_workers=args.workers, model=args.model, load_format=args.load_format,
                         log_format="text", policy=args.policy, prefix_cache=args.prefix_cache,
                         worker_threads=args.worker_threads)
    state = tempfile.TemporaryDirectory(prefix="llmserve-soak-")  # as `llmserve up`: calibrations kept for restarts
    specs = service_specs(config, ports={"gateway": free_port()},
                          state_dir=state.name if args.keep_calibration else None)
    policy = RestartPolicy(max_restarts=config.max_restarts, window_s=config.restart_window_s)
    prompts = benchmark_prompts(args.prompts)
    rng = random.Random(args.seed)
    faults: list[Fault] = []
    rss: list[RssSample] = []
    async with Stack(specs, log_dir=str(out / "logs")) as stack:
        stop = asyncio.get_running_loop().create_future()
        supervising = asyncio.create_task(stack.supervise(stop, policy))
        async with GatewayClient(specs[-1].address, retry=True) as client:
            reference_load = Load(time.monotonic(), time.monotonic())
            await asyncio.gather(*(_one_request(client, reference_load, i, i, p, args.max_tokens)
                                   for i, p in enumerate(prompts)))
            reference = [o.tokens for o in sorted(reference_load.outcomes, key=lambda o: o.prompt_index)]
            assert all(len(t) == args.max_tokens for t in reference), "the reference run did not complete"
            t0 = time.monotonic()
            load = Load(t0, t0 + args.minutes * 60)
            cpu = CpuLedger()
            sampler = asyncio.create_task(_sample_rss(stack, load, rss, cpu, args.rss_period_s))
            injector = asyncio.create_task(_inject(stack, load, faults, args.faults, args.warmup_s,
                                                   args.fault_every_s, rng))
            await asyncio.gather(*(_stream(client, load, i, prompts, args.max_tokens) for i in range(args.streams)))
            for service in list(stack.running):  # the last reading, before anything stops
                cpu.sample(service.spec.name, service.process.pid)
            cpu.finish()
            wall_s = load.now()
            for task in (injector, sampler):
                task.cancel()
            await asyncio.gather(injector, sampler, return_exceptions=True)
        gave_up = supervising.done()
        stop.set_result(None)
        await supervising
    settings = {k: getattr(args, k) for k in ("streams", "minutes", "fault_every_s", "faults", "max_tokens",
                                             "workers", "warmup_s", "policy", "model", "load_format", "prefix_cache",
                                             "worker_threads", "keep_calibration")}
    state.cleanup()
    summary = summarize(load.outcomes, faults, rss, reference, settings)
    summary["cpu"] = cpu.summary(wall_s)
    summary["supervisor_gave_up"] = gave_up
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(report(summary))
    plot_rss(rss, faults, out / "rss.png")
    return summary


def report(summary: dict[str, Any]) -> str:
    """results.md: the tables, then the completions per second and where the CPU went."""
    cpu = summary["cpu"]
    rate = summary["requests"]["completed"] / cpu["wall_s"]
    return markdown(summary) + "\n".join([f"\n{rate:.1f} requests completed per second."] + cpu_markdown(cpu)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fault-every-s", type=float, default=60.0)
    parser.add_argument("--faults", type=lambda s: s.split(","), default=list(DEFAULT_FAULTS),
                        help=f"comma-separated, from {','.join(FAULTS)} (default: all)")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="no fault before; RSS is compared from here")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=16, help="distinct prompts (each with a reference output)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policy", default="fcfs")
    parser.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=True,
                        help="the workers' prefix cache and KV-aware routing (llmserve up's default: on)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--load-format", default="dummy", help="dummy: random weights of the model's architecture")
    parser.add_argument("--worker-threads", type=int, default=0,
                        help="torch threads per worker (0: llmserve up's default, the CPUs shared out among "
                             "the workers)")
    parser.add_argument("--keep-calibration", action=argparse.BooleanOptionalAction, default=True,
                        help="a restarted worker reuses its start-up calibration, as under llmserve up (--no-: "
                             "it times the grid again)")
    parser.add_argument("--rss-period-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1, help="which service each fault hits")
    parser.add_argument("--out", default="bench_out/soak")
    args = parser.parse_args()
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown --faults {sorted(unknown)}: choose from {FAULTS}")
    summary = asyncio.run(run(args))
    print(report(summary))


if __name__ == "__main__":
    main()
