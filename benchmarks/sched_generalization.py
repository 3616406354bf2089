"""The scheduling generalization suite (issue 9): every policy on workloads it was not tuned on.

    .venv/bin/python benchmarks/sched_generalization.py --out bench_out/generalization --jobs 2

On the simulator with its defaults (what `llmserve up` runs: 2 plans in flight, checkpoint
preemption, bros's online cost model), on the `h100_llama3_8b` profile: 24 hybrid + 4 agentic
workloads per seed built from the real traces (benchmarks/sched_suite/workloads.py), each at
every load of `--loads`, under fcfs, priority, edf, bros and tempo, with the dedicated run (the
workload's RT requests alone under fcfs) beside it, and tempo-oracle (tempo told the true output
lengths, simulator only) for target 4. The targets of issue 9 are evaluated per cell
(benchmarks/sched_suite/targets.py) for bros and tempo. `--policies` picks the runs (e.g.
`tempo,tempo-oracle` for target 4 alone; `bros+admission` adds bros with the scheduler's opt-in
--rt-admission-control, target 5, reported by benchmarks/sched_suite/admission.py).

Seeds are split: TUNING_SEEDS are the ones policies may be changed against; HELD_OUT_SEEDS are run
only to report (`--half held-out`), never while changing a policy. Both halves are reported
separately. Outputs in --out: results.json (every run's `llmserve bench` metrics, the verdicts,
the summary), table.md (summary and one row per cell), heatmap.png.

`--reuse OLD/results.json --rerun bros,tempo` takes every other run from an earlier result of the
same configuration (fcfs, priority, edf and dedicated do not change when only bros or tempo does).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sched_suite.report import cell_table, heatmap, summary_table  # noqa: E402
from benchmarks.sched_suite.runner import DEDICATED, Job, run_job, split_policy  # noqa: E402
from benchmarks.sched_suite.targets import EVALUATED_POLICIES, evaluate, summarize_targets  # noqa: E402
from benchmarks.sched_suite.workloads import WorkloadSpec, suite_specs  # noqa: E402
from scheduler_svc.sim.workloads.traces import TRACES_ENV  # noqa: E402

TUNING_SEEDS = (1,)
HELD_OUT_SEEDS = (2,)  # never looked at while changing a policy (until phase E's diagnosis, below)
# A second held-out seed, added in phase E because one cell of seed 2 had been looked at to find the
# cause of bros's burst misses (docs/scheduling.md): nothing was changed or tuned against seed 3.
FRESH_SEEDS = (3,)
# Phase F's mechanisms were found on fresh-seed cells, so seed 3 was read too: phase G's (seats)
# were built and checked on seeds 1-3, and seed 4 was then run once, to report, with nothing
# changed after it (docs/scheduling.md, phase G).
UNSEEN_SEEDS = (4,)
HALVES = {"tuning": TUNING_SEEDS, "held_out": HELD_OUT_SEEDS, "fresh": FRESH_SEEDS, "unseen": UNSEEN_SEEDS}
POLICIES = ("fcfs", "priority", "edf", "bros", "tempo", "tempo-oracle")
OPTION_POLICIES = ("bros", "tempo", "tempo-oracle")  # the ones --slack-bank-tpots and --policy-option apply to
LOADS = (0.5, 1.0, 2.0, 4.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/generalization")
    p.add_argument("--half", choices=("tuning", "held-out", "fresh", "unseen", "both", "all"), default="both",
                   help="seeds: tuning, held-out, fresh (a second held-out seed), unseen (a third, run only "
                        "to report phase G), both (tuning and held-out), all (the first three)")
    p.add_argument("--jobs", type=int, default=2, help="simulations in parallel processes")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per workload at load x1")
    p.add_argument("--loads", type=float, nargs="+", default=list(LOADS))
    p.add_argument("--policies", default=",".join((*POLICIES, DEDICATED)),
                   help="runs per cell, comma-separated: simulator policies (tempo-oracle: target 4), "
                        "NAME+admission (with --rt-admission-control: target 5), dedicated; checks whose runs "
                        "are missing do not apply")
    p.add_argument("--cost-model", default="h100_llama3_8b")
    p.add_argument("--families", default="hybrid,agentic")
    p.add_argument("--only", default="", help="run only workloads whose name contains this")
    p.add_argument("--reuse", default="", help="an earlier results.json of the same configuration")
    p.add_argument("--rerun", default="bros,tempo", help="with --reuse: the policies to simulate again")
    p.add_argument("--traces", default="", help="the traces folder (default: $LLMSERVE_TRACES_DIR or ../shared/traces)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--slack-bank-tpots", type=float, default=0.0,
                   help="bros and tempo (tempo-oracle, +admission): the scheduler's opt-in --slack-bank-tpots "
                        "(default 0: off; with --reuse, rerun bros and tempo)")
    p.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE",
                   help="bros and tempo (tempo-oracle, +admission): a policy option, e.g. take_seats=False "
                        "(repeatable; with --reuse, rerun bros and tempo)")
    p.add_argument("--prefix-cache", choices=("on", "off"), default="off",
                   help="prefix caching on the agentic workloads' hash ids (default off: the suite's results "
                        "stay comparable with those taken before `llmserve up` cached prefixes, issue 13 phase B)")
    return p.parse_args(argv)


def _halves(which: str) -> dict[str, tuple[int, ...]]:
    if which == "all":
        return {k: HALVES[k] for k in ("tuning", "held_out", "fresh")}
    if which == "both":
        return {k: HALVES[k] for k in ("tuning", "held_out")}
    return {which.replace("-", "_"): HALVES[which.replace("-", "_")]}


def _policies(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p.strip() for p in args.policies.split(",") if p.strip())


def _config(args: argparse.Namespace) -> dict:
    config = {"duration_s": args.duration, "loads": list(args.loads), "cost_model": args.cost_model,
              "sim_config": "SimConfig.from_cost_model defaults (llmserve up's)"}
    if args.prefix_cache == "on":  # only then, so that earlier results stay reusable
        config["prefix_cache"] = "on"
    return config


def _slo_policy_options(args: argparse.Namespace) -> tuple[tuple[str, object], ...]:
    """The options bros and tempo (tempo-oracle, +admission) run with: the bank, and any
    `--policy-option KEY=VALUE` (a Python literal), as (hashable, picklable) pairs."""
    options = [("slack_bank_tpots", args.slack_bank_tpots)] if args.slack_bank_tpots else []
    for item in args.policy_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--policy-option {item!r}: expected KEY=VALUE")
        options.append((key, ast.literal_eval(value)))
    return tuple(options)


def _load_reuse(args: argparse.Namespace) -> dict[str, dict]:
    if not args.reuse:
        return {}
    doc = json.loads(Path(args.reuse).read_text(encoding="utf-8"))
    if {k: doc["suite"].get(k) for k in _config(args)} != _config(args):
        raise SystemExit(f"--reuse {args.reuse}: another configuration ({doc['suite']}); rerun everything")
    rerun = {p.strip() for p in args.rerun.split(",") if p.strip()}
    return {f"{c['workload']}|x{c['load']:g}|{name}": m for half in doc["halves"].values() for c in half["cells"]
            for name, m in c["runs"].items() if name not in rerun}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.traces:
        os.environ[TRACES_ENV] = str(Path(args.traces).resolve())  # the worker processes inherit it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    families = {f.strip() for f in args.families.split(",")}
    halves = {name: [s for s in suite_specs(seeds) if s.family in families and args.only in s.name]
              for name, seeds in _halves(args.half).items()}
    runs = _load_reuse(args)
    overrides = (("prefix_cache", args.prefix_cache == "on"),)
    options = _slo_policy_options(args)
    with_options = (*overrides, ("policy_options", options))
    jobs = [Job(spec, load, policy, args.duration, args.cost_model,
                with_options if options and split_policy(policy)[0] in OPTION_POLICIES else overrides)
            for specs in halves.values() for spec in specs for load in args.loads
            for policy in _policies(args)]
    todo = [j for j in jobs if j.key not in runs]
    sys.stderr.write(f"{len(jobs)} runs ({len(todo)} to simulate, {len(jobs) - len(todo)} reused) "
                     f"in {args.jobs} processes\n")
    wall0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for done, (key, metrics) in enumerate(pool.map(run_job, todo, chunksize=2), 1):
            runs[key] = metrics
            if done % 20 == 0 or done == len(todo):
                sys.stderr.write(f"\r{done}/{len(todo)} runs, {time.perf_counter() - wall0:.0f} s")
    wall_s = time.perf_counter() - wall0
    sys.stderr.write("\n")
    doc = {"suite": {**_config(args), "policies": list(_policies(args)), "tuning_seeds": list(TUNING_SEEDS),
                     "held_out_seeds": list(HELD_OUT_SEEDS), "fresh_seeds": list(FRESH_SEEDS),
                     "unseen_seeds": list(UNSEEN_SEEDS),
                     "slack_bank_tpots": args.slack_bank_tpots, "policy_options": args.policy_option, "wall_s": round(wall_s, 1), "simulated_runs": len(todo), "reused_runs": len(jobs) - len(todo)},
           "halves": {}}
    text = [f"# Scheduling generalization suite ({args.cost_model}, {args.duration:g} s per workload at x1, "
            f"loads {', '.join(f'x{x:g}' for x in args.loads)}; {len(todo)} runs simulated in {wall_s:.0f} s)"]
    for name, specs in halves.items():
        cells = [_cell(spec, load, runs, _policies(args)) for spec in specs for load in args.loads]
        doc["halves"][name] = {"seeds": sorted({s.seed for s in specs}), "summary": summarize_targets(cells),
                               "cells": cells}
        text += [f"\n## {name} half (seeds {sorted({s.seed for s in specs})}): targets met / applicable cells\n",
                 summary_table(cells), f"\n### {name} half, per cell (✓ met, ✗ missed, · n/a)\n", cell_table(cells)]
        print(f"\n{name} half:\n{summary_table(cells)}")
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    if not args.no_plot:
        heatmap({name: h["cells"] for name, h in doc["halves"].items()}, out / "heatmap.png")
    print(f"\nwrote {out}/results.json, table.md{'' if args.no_plot else ', heatmap.png'} ({wall_s:.0f} s)",
          file=sys.stderr)
    return 0


def _cell(spec: WorkloadSpec, load: float, runs: dict[str, dict], policies: tuple[str, ...]) -> dict:
    cell_runs = {p: runs[f"{spec.name}|x{load:g}|{p}"] for p in policies}
    return {"workload": spec.name, "family": spec.family, "mix": spec.mix, "slo": spec.slo, "be": spec.be,
            "arrivals": spec.arrivals, "seed": spec.seed, "load": load, "runs": cell_runs,
            "targets": {p: evaluate(p, cell_runs) for p in EVALUATED_POLICIES}}


if __name__ == "__main__":
    sys.exit(main())
