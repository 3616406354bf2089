"""Builds a workload JSONL from the public traces and/or a synthetic generator.

Examples:
    # Azure conversation trace as real-time chat, arXiv-summarization lengths as best-effort batch
    python -m scheduler_svc.sim.make_workload --duration 120 \\
        --stream azure_conv:real_time --stream arxiv:best_effort:rate=2 --out rt_be.jsonl
    # Agentic coding sessions as collective (workflow) requests, plus a class mix of chat traffic
    python -m scheduler_svc.sim.make_workload --duration 120 --mix 0.5,0.3,0.2 \\
        --stream azure_conv:mix --stream agentic:deadline:rate=0.2,sessions=12 --out mixed.jsonl
    # Seeded synthetic bursts (gamma gaps, CV 3)
    python -m scheduler_svc.sim.make_workload --stream synthetic:real_time:rate=20,process=gamma,cv=3 --out s.jsonl
"""

from __future__ import annotations

import argparse
import collections
import sys

from scheduler_svc.sim.workload import write_workload
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scheduler_svc.sim.make_workload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stream", action="append", required=True, help="SOURCE:CLASS[:key=value,...] (repeatable)")
    p.add_argument("--out", required=True, help="output JSONL path")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of workload time")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiplies every stream's rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mix", default="0.34,0.33,0.33", help="real_time,deadline,best_effort fractions for CLASS=mix")
    p.add_argument("--ttft-ms", type=float, default=1000.0, help="tier-1 TTFT SLO of real-time requests")
    p.add_argument("--tpot-ms", type=float, default=100.0, help="tier-1 TPOT SLO of real-time requests")
    p.add_argument("--deadline-ms", type=float, default=10000.0, help="tier-1 deadline of deadline requests")
    p.add_argument("--tiers", type=int, default=4, help="SLO of request k = base x (k mod tiers + 1)")
    p.add_argument("--max-prompt", type=int, default=4096, help="prompt tokens are capped here")
    p.add_argument("--max-output", type=int, default=1024, help="output tokens are capped here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        mix = tuple(float(x) for x in args.mix.split(","))
        config = BuildConfig(duration_s=args.duration, rate_scale=args.rate_scale, seed=args.seed,
                             slo=SloSpec(args.ttft_ms, args.tpot_ms, args.deadline_ms, args.tiers),
                             max_prompt_tokens=args.max_prompt, max_output_tokens=args.max_output,
                             mix=mix)  # type: ignore[arg-type]
        streams = [StreamSpec.parse(s) for s in args.stream]
        requests = build_workload(streams, config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"make_workload: {exc}", file=sys.stderr)
        return 2
    n = write_workload(args.out, requests)
    counts = collections.Counter(r.cls for r in requests)
    workflows = len({r.workflow_id for r in requests if r.workflow_id})
    print(f"wrote {n} requests to {args.out}: " + ", ".join(f"{c}={k}" for c, k in sorted(counts.items()))
          + (f", {workflows} workflows" if workflows else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
