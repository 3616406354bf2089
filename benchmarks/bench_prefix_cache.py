"""Prefix caching in the simulator (issue 13), side by side in one run, on the Mooncake
conversation trace and the Claude Code agentic traces (their block hash ids drive the cache):

- the trace's upper bound: blocks an infinite cache could serve (llmserve/prefix/reuse.py);
- one worker, per policy (fcfs, bros, tempo), caching with the host tier (`--host-tier-gib`, each
  size), on the device pool alone, and off: hit rate as a fraction of the bound, the part of it
  served from the host tier, prefill tokens saved, RT / deadline / workflow attainment, service
  gain, TTFT;
- 4 and 16 workers (bros), the offered load scaled with them: KV-aware placement vs load-only vs
  round-robin (scheduler_svc/core/placement.py): hit rate vs the bound, TTFT p50/p99, attainment
  (the device pools alone, as phase A measured them: no host tier).

    .venv/bin/python benchmarks/bench_prefix_cache.py [--json out.json]

Targets (issue 13): hit rate >= 90% of the bound on one worker, >= 80% with 16 workers (KV-aware).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmserve.prefix import lru_reference, reuse_bound  # noqa: E402
from scheduler_svc.core.placement import Placement, PlacementConfig  # noqa: E402
from scheduler_svc.sim.cluster import ClusterSimulation  # noqa: E402
from scheduler_svc.sim.cost_model import load_cost_model  # noqa: E402
from scheduler_svc.sim.metrics import summarize  # noqa: E402
from scheduler_svc.sim.prefix import workload_chain  # noqa: E402
from scheduler_svc.sim.service_gain import service_gain  # noqa: E402
from scheduler_svc.sim.simulator import SimConfig, SimResult, Simulation  # noqa: E402
from scheduler_svc.sim.workload import WorkloadRequest  # noqa: E402
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload  # noqa: E402

POLICIES = ("fcfs", "bros", "tempo")
MAX_PROMPT, MAX_OUTPUT = 7168, 1000  # the profile's 8192-token context


def workload(name: str, scale: float, duration_s: float) -> list[WorkloadRequest]:
    """`mooncake`: the conversation trace at `scale` x its rate, classes mixed (RT, deadline, BE);
    `agentic`: Claude Code sessions as deadline workflows, `scale` x 0.2 sessions/s."""
    cfg = BuildConfig(duration_s=duration_s, seed=0, max_prompt_tokens=MAX_PROMPT, max_output_tokens=MAX_OUTPUT)
    if name == "mooncake":
        spec = f"mooncake_conv:mix:rate_scale={scale}"
    else:
        spec = f"agentic:deadline:rate={0.2 * scale},sessions={int(40 * scale)},max_calls=16"
    return build_workload([StreamSpec.parse(spec)], cfg)


def bound_of(requests: list[WorkloadRequest], block_size: int, capacity_blocks: int,
             tier_blocks: tuple[int, ...] = ()) -> dict:
    """The infinite-cache bound, and the LRU reference with `capacity_blocks` (the workers' pools)
    and with each of `tier_blocks` more (a host tier: one LRU of both tiers' size)."""
    prompts = [(r.prompt_tokens, workload_chain(r, block_size)) for r in requests]
    b = reuse_bound(prompts, block_size)
    lru = lru_reference(prompts, block_size, capacity_blocks)
    out = {"requests": len(requests), "cacheable_blocks": b.num_blocks, "reusable_blocks": b.num_reusable,
           "bound": b.fraction, "lru_capacity_blocks": capacity_blocks, "lru_reusable_blocks": lru.num_reusable,
           "lru_of_bound": lru.num_reusable / b.num_reusable if b.num_reusable else math.nan}
    for extra in tier_blocks:
        ref = lru_reference(prompts, block_size, capacity_blocks + extra)
        out[f"lru_of_bound_tier{extra}"] = ref.num_reusable / b.num_reusable if b.num_reusable else math.nan
    return out


def row(result: SimResult, bound: dict, wall_s: float) -> dict:
    m = summarize(result.records, result.stats, service_gain)
    prefix = result.stats.prefix or {}
    hits = prefix.get("prefix_hit_blocks", 0)
    ttfts = [r.ttft_s(result.stats.end_s) * 1000.0 for r in result.records if r.finish_reason != "rejected"]
    prompt_tokens = sum(r.request.prompt_tokens for r in result.records)
    host_hits = prefix.get("prefix_host_hit_blocks", 0)
    return {"hit_of_bound": hits / bound["reusable_blocks"] if bound["reusable_blocks"] else math.nan,
            "host_of_bound": host_hits / bound["reusable_blocks"] if bound["reusable_blocks"] else math.nan,
            "demoted_blocks": prefix.get("prefix_demoted_blocks", 0),
            "missed_blocks": prefix.get("prefix_missed_blocks", 0),
            "hit_of_lru": hits / bound["lru_reusable_blocks"] if bound["lru_reusable_blocks"] else math.nan,
            "hit_rate": prefix.get("prefix_hit_rate", 0.0),
            "prefill_saved": prefix.get("prefill_tokens_saved", 0) / max(prompt_tokens, 1),
            "rt": m["rt_slo_attainment"], "deadline": m["deadline_slo_attainment"],
            "workflow": m["workflow_slo_attainment"], "gain": m["service_gain_total"],
            "ttft_p50_ms": pct(ttfts, 0.5), "ttft_p99_ms": pct(ttfts, 0.99),
            "unfinished": result.num_unfinished, "wall_s": round(wall_s, 1)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def one_worker(name: str, cost, args) -> dict:  # noqa: ANN001
    reqs = workload(name, args.scale, args.duration)
    config = SimConfig.from_cost_model(cost)
    block_bytes = config.block_size * config.kv_bytes_per_token
    tiers = [float(g) for g in args.host_tier_gib.split(",") if g]
    tier_blocks = tuple(int(g * 1024**3) // block_bytes for g in tiers)
    out = {"bound": bound_of(reqs, config.block_size, config.num_blocks, tier_blocks), "runs": {},
           "tier_blocks": dict(zip((f"{g:g}" for g in tiers), tier_blocks))}
    for policy in POLICIES:
        modes = [(f"tier {g:g} GiB", {"prefix_cache": True, "prefix_host_tier_bytes": int(g * 1024**3)})
                 for g in tiers]
        modes += [("on", {"prefix_cache": True, "prefix_host_tier_bytes": 0}), ("off", {"prefix_cache": False})]
        for mode, overrides in modes:
            t0 = time.perf_counter()
            result = Simulation(reqs, policy, cost, dataclasses.replace(config, **overrides)).run()
            r = out["runs"][f"{policy}|{mode}"] = row(result, out["bound"], time.perf_counter() - t0)
            extra = int(overrides.get("prefix_host_tier_bytes", 0)) // block_bytes
            if extra:  # against the LRU of both tiers' size
                r["hit_of_lru"] = r["hit_of_bound"] / out["bound"][f"lru_of_bound_tier{extra}"]
            progress(name, policy, mode, out["runs"][f"{policy}|{mode}"])
    return out


def cluster(name: str, num_workers: int, cost, args) -> dict:  # noqa: ANN001
    reqs = workload(name, args.scale * num_workers, args.cluster_duration)
    config = SimConfig.from_cost_model(cost, prefix_cache=True, prefix_host_tier_bytes=0)
    out = {"bound": bound_of(reqs, config.block_size, config.num_blocks * num_workers), "runs": {}}
    for placement in Placement:
        t0 = time.perf_counter()
        result = ClusterSimulation(reqs, "bros", cost, config, num_workers, PlacementConfig(placement)).run()
        out["runs"][placement.value] = row(result, out["bound"], time.perf_counter() - t0)
        progress(f"{name} x{num_workers}", placement.value, "on", out["runs"][placement.value])
    return out


def progress(name: str, what: str, mode: str, r: dict) -> None:
    sys.stderr.write(f"{name} {what} {mode}: hit/bound {r['hit_of_bound']:.3f} (host {r['host_of_bound']:.3f}) "
                     f"ttft p50 {r['ttft_p50_ms']:.0f} ms, {r['wall_s']} s\n")


def fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else (f"{x:.3f}" if abs(x) < 10 else f"{x:,.0f}")
    return str(x)


def tables(results: dict) -> str:
    lines = []
    for name, single in results["one_worker"].items():
        b = single["bound"]
        refs = "; ".join(f"with a {g} GiB host tier ({n:,} blocks) {b.get(f'lru_of_bound_tier{n}', math.nan):.3f}"
                         for g, n in single.get("tier_blocks", {}).items())
        lines += [f"\n### {name}, one worker ({b['requests']} requests; bound {b['bound']:.3f} of "
                  f"{b['cacheable_blocks']:,} cacheable blocks; an LRU of the pool's {b['lru_capacity_blocks']:,} "
                  f"blocks serves {b['lru_of_bound']:.3f} of the bound{'; ' + refs if refs else ''})\n",
                  "| policy | cache | hit / bound | of it, host tier | hit / LRU ref. | prefill saved | RT att. | "
                  "deadline att. | workflow att. | service gain | TTFT p50 ms | TTFT p99 ms |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, r in single["runs"].items():
            policy, cache = key.split("|", 1)
            lines.append(f"| {policy} | {cache} | {fmt(r['hit_of_bound'])} | {fmt(r['host_of_bound'])} | "
                         f"{fmt(r['hit_of_lru'])} | {fmt(r['prefill_saved'])} | {fmt(r['rt'])} | "
                         f"{fmt(r['deadline'])} | {fmt(r['workflow'])} | {fmt(r['gain'])} | {fmt(r['ttft_p50_ms'])} | "
                         f"{fmt(r['ttft_p99_ms'])} |")
    for key, multi in results["cluster"].items():
        b = multi["bound"]
        lines += [f"\n### {key}, bros ({b['requests']} requests; bound {b['bound']:.3f}; an LRU of all pools' "
                  f"{b['lru_capacity_blocks']:,} blocks serves {b['lru_of_bound']:.3f} of it)\n",
                  "| placement | hit / bound | hit / LRU ref. | prefill saved | RT att. | deadline att. | workflow att. | "
                  "TTFT p50 ms | TTFT p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
        for placement, r in multi["runs"].items():
            lines.append(f"| {placement} | {fmt(r['hit_of_bound'])} | {fmt(r['hit_of_lru'])} | {fmt(r['prefill_saved'])} | {fmt(r['rt'])} | "
                         f"{fmt(r['deadline'])} | {fmt(r['workflow'])} | {fmt(r['ttft_p50_ms'])} | "
                         f"{fmt(r['ttft_p99_ms'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cost-model", default="h100_llama3_8b")
    p.add_argument("--duration", type=float, default=600.0, help="one-worker runs: seconds of workload")
    p.add_argument("--cluster-duration", type=float, default=40.0, help="4/16-worker runs: seconds of workload")
    p.add_argument("--scale", type=float, default=1.0, help="offered load per worker, x the trace's")
    p.add_argument("--workloads", default="mooncake,agentic")
    p.add_argument("--workers", default="4,16")
    p.add_argument("--host-tier-gib", default="256,512",
                   help="one-worker runs: host-tier sizes per worker, GiB, comma-separated (each a run per "
                        "policy; 256: an 8-GPU node's 2 TiB of host memory shared by its 8 workers)")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args(argv)
    cost = load_cost_model(args.cost_model)
    t0 = time.perf_counter()
    names = args.workloads.split(",")
    results: dict = {"args": vars(args), "load_avg_start": os.getloadavg()}
    results["one_worker"] = {n: one_worker(n, cost, args) for n in names}
    results["cluster"] = {f"{n} x{k}": cluster(n, int(k), cost, args) for n in names for k in args.workers.split(",")}
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["load_avg_end"] = os.getloadavg()
    print(tables(results))
    print(f"\nwall {results['wall_s']} s; load average {results['load_avg_start']} -> {results['load_avg_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
