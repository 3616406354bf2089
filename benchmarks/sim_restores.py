"""Checkpoint restores next to the prefix cache in the simulator (issue 13): on the Mooncake
conversation trace with classes mixed, for bros and tempo, the host tier's restores, failed
restores and bytes restored, prefill tokens the cache saved, tokens recomputed, RT / deadline
attainment and BE whole-job throughput. Run it on two trees to compare them (docs/prefix_caching.md
compares whole restores, c34f6f6, with restores past the prefix hit):

    .venv/bin/python benchmarks/sim_restores.py --scales 2 --seed 0 --duration 60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler_svc.sim.cost_model import load_cost_model  # noqa: E402
from scheduler_svc.sim.metrics import summarize  # noqa: E402
from scheduler_svc.sim.service_gain import service_gain  # noqa: E402
from scheduler_svc.sim.simulator import SimConfig, Simulation  # noqa: E402
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload  # noqa: E402

FIELDS = ("rt_slo_attainment", "deadline_slo_attainment", "be_throughput_run_tok_s", "host_tier_checkpoints",
          "host_tier_restores", "host_tier_failed_restores", "host_tier_evictions", "host_tier_restored_bytes",
          "host_tier_transfer_s", "prefill_tokens_saved", "recomputed_tokens")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="2", help="comma-separated load scales (x the trace's rate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of workload")
    p.add_argument("--cost-model", default="h100_llama3_8b")
    args = p.parse_args()
    cost = load_cost_model(args.cost_model)
    for scale in (float(s) for s in args.scales.split(",")):
        cfg = BuildConfig(duration_s=args.duration, seed=args.seed, max_prompt_tokens=7168, max_output_tokens=1000)
        requests = build_workload([StreamSpec.parse(f"mooncake_conv:mix:rate_scale={scale}")], cfg)
        for policy in ("bros", "tempo"):
            result = Simulation(requests, policy, cost, SimConfig()).run()
            metrics = summarize(result.records, result.stats, service_gain) | (result.stats.prefix or {})
            print(json.dumps({"policy": policy, "scale": scale, "seed": args.seed,
                              **{k: metrics.get(k) for k in FIELDS}}), flush=True)


if __name__ == "__main__":
    main()
