"""`llmserve bench`: every policy on the same workload, one table, results.json and PNG plots.

    llmserve bench --workload w.jsonl --engine sim --cost-model h100_llama3_8b --rate-scale 1 2 3 --out bench_out/

Every policy runs unless `--policies` names some. `--engine sim` runs the discrete-event simulator
(the service's scheduler core on a virtual clock, priced by the cost model). With no extra flags it
simulates what `llmserve up` runs by default: 2 plans in flight, checkpoint preemption to a 2 GiB
host tier (copies priced at the link bandwidth), and bros and tempo refitting their cost model
online from the service's built-in prior. `--engine live` replays the workload against a real stack
through the public Gateway API, measuring on the client: against `--address` (the policy that
stack serves), or by starting a local stack per policy. Use `--time-scale`, `--max-requests` and
the length caps to shrink a GPU-sized workload to what a small CPU serves.

results.json: {"workload", "engine", "cost_model", "rate_scales", "policies": {NAME: metrics at
the first rate scale}, "sweep": [{"rate_scale", "policies": {NAME: metrics}}, ...]}. Metrics are
described in scheduler_svc/sim/metrics.py; fractions are in [0, 1] and a class absent from the
workload gives null.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from llmserve.model_source import ModelSettings
from llmserve.settings import add_settings
from llmserve_stack.bench_runs import live_one, sim_one
from scheduler_svc.core.policy import POLICY_NAMES

TABLE_COLUMNS = (
    ("rt_slo_attainment", "RT SLO", "{:.1%}"),
    ("deadline_slo_attainment", "DL SLO", "{:.1%}"),
    ("workflow_slo_attainment", "WF SLO", "{:.1%}"),
    ("be_throughput_tok_s", "BE tok/s", "{:.0f}"),
    ("be_throughput_run_tok_s", "BE job tok/s", "{:.0f}"),
    ("be_mean_completion_s", "BE done s", "{:.1f}"),
    ("service_gain", "gain/s", "{:.0f}"),
    ("goodput_req_s", "good req/s", "{:.2f}"),
    ("rt_ttft_p50_ms", "TTFT p50", "{:.0f}"),
    ("rt_ttft_p99_ms", "TTFT p99", "{:.0f}"),
    ("rt_tpot_p99_ms", "TPOT p99", "{:.0f}"),
    ("preemptions", "preempt", "{}"),
    ("kv_util_mean", "KV use", "{:.0%}"),
)


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `bench` subcommand to the llmserve CLI."""
    p = subparsers.add_parser("bench", help="compare scheduling policies on a workload (simulated or live)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", required=True, help="workload JSONL (python -m scheduler_svc.sim.make_workload)")
    p.add_argument("--policies", default=",".join(POLICY_NAMES),
                   help=f"comma-separated, from {', '.join(POLICY_NAMES)} (default: all); sim also "
                        "tempo-oracle: tempo told every true output length (issue 9's target 4, never servable)")
    p.add_argument("--engine", choices=("sim", "live"), default="sim")
    p.add_argument("--cost-model", default="h100_llama3_8b",
                   help="sim: cost-model JSON file or bundled profile name (h100_llama3_8b, cpu_smollm2_135m)")
    p.add_argument("--rate-scale", type=float, nargs="+", default=[1.0],
                   help="compress arrivals by these factors (a load sweep); SLOs and lengths stay")
    p.add_argument("--out", required=True, help="output directory (results.json, plots)")
    p.add_argument("--max-requests", type=int, default=0, help="keep the first N requests (0: all)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every time (arrivals, think times, SLOs) by this: replay a GPU workload on a slower machine")
    p.add_argument("--max-prompt-tokens", type=int, default=0, help="cap prompt lengths (0: no cap)")
    p.add_argument("--max-output-tokens", type=int, default=0, help="cap output lengths (0: no cap)")
    p.add_argument("--jobs", type=int, default=1, help="sim: policies simulated in parallel processes")
    p.add_argument("--pipeline-depth", type=int, default=None, help="sim: plans in flight (default 2, as the service)")
    p.add_argument("--no-checkpoint-preemption", action="store_true",
                   help="sim: preempt by recompute only (default: checkpoint victims to the host tier, as the service)")
    p.add_argument("--prefix-cache", choices=("on", "off"), default="on",
                   help="sim: prefix caching on the workload's hash ids (SimConfig.prefix_cache; a workload "
                        "without hash_ids has no hits either way); default on, as `llmserve up` runs")
    p.add_argument("--host-tier-gb", type=float, default=None, help="sim: host tier for checkpoints, GiB (default 2, "
                                                                     "the KV store's default)")
    p.add_argument("--cost-model-prior", action=argparse.BooleanOptionalAction, default=True,
                   help="sim: bros and tempo start from the simulated worker's cost model, as `llmserve up` starts "
                        "them from each worker's start-up calibration (default); --no-cost-model-prior: from the "
                        "service's built-in prior, as a worker started with --no-calibrate; refit online either way")
    p.add_argument("--rt-admission-control", action="store_true",
                   help="sim: the scheduler's opt-in --rt-admission-control (bros, tempo): a new RT request whose "
                        "predicted TTFT exceeds its SLO is rejected (rt_rejected; it counts as a miss in "
                        "rt_slo_attainment, not in rt_slo_attainment_admitted)")
    p.add_argument("--drain-limit", type=float, default=600.0,
                   help="sim: stop this many seconds after the last arrival; unfinished requests miss")
    p.add_argument("--num-blocks", type=int, default=0, help="sim: KV blocks (0: from the cost model JSON)")
    p.add_argument("--max-num-batched-tokens", type=int, default=0, help="sim: step token budget (0: from JSON)")
    p.add_argument("--max-num-seqs", type=int, default=0, help="sim: most sequences per step (0: from JSON)")
    p.add_argument("--address", default="", help="live: gateway host:port of a running stack")
    add_settings(p.add_argument_group("live without --address: the model of the stacks it starts"), ModelSettings)
    p.add_argument("--live-timeout", type=float, default=1800.0, help="live: seconds per policy run")
    p.add_argument("--live-stop", choices=("cancel", "max_tokens"), default="cancel",
                   help="live: end each request at its true length by cancelling it client-side (no policy can see "
                        "the length), or by max_tokens (an oracle for policies that read max_tokens, e.g. tempo)")
    p.add_argument("--live-max-tokens", type=int, default=1024,
                   help="live, cancel stop: the max_tokens every request carries (outputs are capped to it)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run_bench)


def _fmt(value: object, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def format_table(policies: dict[str, dict], title: str) -> str:
    """One row per policy, the key metrics as columns (absent classes show '-')."""
    cols = [c for c in TABLE_COLUMNS if any(m.get(c[0]) is not None for m in policies.values())]
    header = ["policy", *(c[1] for c in cols)]
    rows = [[name, *(_fmt(m.get(k), f) for k, _, f in cols)] for name, m in policies.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _policies(args: argparse.Namespace) -> list[str] | str:
    """The policies to run, or why they cannot be."""
    from scheduler_svc.sim.policies import SIM_POLICY_NAMES

    known = SIM_POLICY_NAMES if args.engine == "sim" else POLICY_NAMES
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        return f"--policies is empty: name at least one ({','.join(known)})"
    unknown = [p for p in policies if p not in known]
    if unknown:
        only_sim = " (tempo-oracle, which knows every true output length, exists in the simulator only)" \
            if args.engine == "live" else ""
        return f"unknown --policies {','.join(unknown)} for --engine {args.engine}: choose from {','.join(known)}{only_sim}"
    if args.rt_admission_control:
        from scheduler_svc.core.policy import COST_MODEL_POLICIES
        from scheduler_svc.sim.oracle_lengths import ORACLE_POLICY

        without = [p for p in policies if p not in (*COST_MODEL_POLICIES, ORACLE_POLICY)]
        if without or args.engine != "sim":
            return ("--rt-admission-control (sim) needs policies with a cost model: "
                    f"{', '.join(COST_MODEL_POLICIES)} (got {','.join(without) or '--engine live'})")
    if args.engine == "live" and args.address and len(policies) > 1:
        return ("--address replays against one running stack, which serves one policy: pass one policy "
                "with --policies, or drop --address to start a stack per policy")
    return policies


def _read_requests(args: argparse.Namespace) -> list:
    """The workload, cut and scaled as the flags say (raises WorkloadError, OSError, ValueError)."""
    from scheduler_svc.sim import transform
    from scheduler_svc.sim.workload import read_workload

    requests = read_workload(args.workload)
    if args.max_requests:
        requests = transform.first_requests(requests, args.max_requests)
    max_output = args.max_output_tokens or None
    if args.engine == "live" and args.live_stop == "cancel":
        max_output = min(max_output or args.live_max_tokens, args.live_max_tokens)
    requests = transform.cap_lengths(requests, args.max_prompt_tokens or None, max_output)
    return transform.stretch_time(requests, args.time_scale)


def _sim_overrides(args: argparse.Namespace) -> dict[str, object]:
    """`SimConfig` fields the flags set."""
    overrides: dict[str, object] = {
        k: v for k, v in (("num_blocks", args.num_blocks), ("max_num_batched_tokens", args.max_num_batched_tokens),
                          ("max_num_seqs", args.max_num_seqs)) if v}
    overrides.update(drain_limit_s=args.drain_limit, checkpoint_preemption=not args.no_checkpoint_preemption,
                     cost_model_as_prior=args.cost_model_prior, rt_admission_control=args.rt_admission_control,
                     prefix_cache=args.prefix_cache == "on")
    if args.pipeline_depth is not None:
        overrides["pipeline_depth"] = args.pipeline_depth
    if args.host_tier_gb is not None:
        overrides["host_tier_bytes"] = int(args.host_tier_gb * 2**30)
    return overrides


def _run_scale(scaled: list, policies: list[str], args: argparse.Namespace, overrides: dict, scale: float) -> dict:
    """Every policy at one rate scale: {policy: {"metrics", "records", "end_s"}}."""
    results: dict[str, dict] = {}
    if args.engine != "sim":
        for p in policies:
            results[p] = live_one(scaled, p, args, f"{p} x{scale:g} (live)")
        return results
    jobs = [(scaled, p, args.cost_model, overrides, args.jobs <= 1, f"{p} x{scale:g}") for p in policies]
    if args.jobs > 1:
        sys.stderr.write(f"simulating {len(policies)} policies at rate x{scale:g} in {args.jobs} processes\n")
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for p, res in zip(policies, pool.map(sim_one, jobs)):
                results[p] = res
    else:
        for p, job in zip(policies, jobs):
            results[p] = sim_one(job)
    return results


def run_bench(args: argparse.Namespace) -> int:
    """Runs the bench; returns the process exit code (2 on bad input)."""
    from scheduler_svc.sim import transform
    from scheduler_svc.sim.workload import WorkloadError

    policies = _policies(args)
    if isinstance(policies, str):
        print(f"bench: {policies}", file=sys.stderr)
        return 2
    try:
        requests = _read_requests(args)
    except (WorkloadError, OSError, ValueError) as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    if not requests:
        print(f"bench: {args.workload} has no requests", file=sys.stderr)
        return 2
    cost = None
    if args.engine == "sim":
        from scheduler_svc.sim.cost_model import load_cost_model

        try:
            cost = load_cost_model(args.cost_model)
        except (FileNotFoundError, ValueError) as err:
            print(f"bench: {err}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = _sim_overrides(args)
    sweep: list[dict] = []
    for scale in args.rate_scale:
        scaled = transform.scale_rate(requests, scale)
        results = _run_scale(scaled, policies, args, overrides, scale)
        metrics = {p: r["metrics"] for p, r in results.items()}
        sweep.append({"rate_scale": scale, "policies": metrics})
        print(format_table(metrics, f"\n{args.engine} | {Path(args.workload).name} | {len(scaled)} requests | "
                                    f"rate x{scale:g}" + (f" | cost model {cost.name}" if cost is not None else "")))
        if not args.no_plots:
            from scheduler_svc.sim.plots import plot_latency_cdf

            plot_latency_cdf({p: r["records"] for p, r in results.items()}, {p: r["end_s"] for p, r in results.items()},
                             out / f"latency_cdf_x{scale:g}.png", title=f"{Path(args.workload).stem}, rate x{scale:g}")
    _write_results(args, out, cost, len(requests), sweep)
    return 0


def _write_results(args: argparse.Namespace, out: Path, cost: object, num_requests: int, sweep: list[dict]) -> None:
    doc = {
        "workload": str(args.workload),
        "engine": args.engine,
        "cost_model": cost.to_json() if cost is not None else None,  # type: ignore[attr-defined]
        "num_requests": num_requests,
        "time_scale": args.time_scale,
        "rate_scales": list(args.rate_scale),
        "policies": sweep[0]["policies"],
        "sweep": sweep,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if not args.no_plots and len(sweep) > 1:
        from scheduler_svc.sim.plots import plot_sweep

        plot_sweep({s["rate_scale"]: s["policies"] for s in sweep}, out / "sweep.png", title=Path(args.workload).stem)
    print(f"\nwrote {out / 'results.json'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """`python -m llmserve_stack.bench ...` (the same as `llmserve bench ...`)."""
    parser = argparse.ArgumentParser(prog="llmserve")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
