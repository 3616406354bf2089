"""The live scheduling suite (issue 9, live side): the stack on this CPU against its dedicated
run, and the simulator's prediction of every cell.

    .venv/bin/python benchmarks/sched_live.py --out bench_out/sched_live            # the suite
    .venv/bin/python benchmarks/sched_live.py --out bench_out/smoke --mixes rt_be_short --loads 0.5 1

4 workloads x 3 loads (benchmarks/sched_live_suite/workloads.py: mixes drawn from the traces,
scaled to the CPU), each live under fcfs, bros and tempo and as the dedicated run (its RT requests
alone under fcfs), one local stack per policy (live_runs.py). Then the simulator on the same
scaled requests with the worker's start-up calibration (predict.py). Outputs in --out:
results.json (every run's metrics, live and simulated, each stack's worker description and the
verdicts), table.md (the targets, the predicted-vs-measured table, the summary), prediction.png,
logs-*/ (the services' logs). On a shared machine run it under a lock (`flock /tmp/cpu.lock ...`) so that no other benchmark overlaps it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sched_live_suite import workloads as wl  # noqa: E402
from benchmarks.sched_live_suite.live_runs import run_live  # noqa: E402
from benchmarks.sched_live_suite.plots import plot_prediction  # noqa: E402
from benchmarks.sched_live_suite.predict import predict  # noqa: E402
from benchmarks.sched_live_suite.report import prediction_table, summary_table, targets_table, verdicts  # noqa: E402

POLICIES = ("fcfs", "bros", "tempo")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--mixes", nargs="+", default=list(wl.MIXES), choices=list(wl.MIXES))
    p.add_argument("--loads", nargs="+", type=float, default=list(wl.LOADS))
    p.add_argument("--resim", help="an earlier results.json: take its live runs and worker descriptions, "
                                   "simulate and report again (no live run)")
    p.add_argument("--rerun", default="", help="with --resim: run these policies live again (comma-separated; "
                                              "fcfs brings its dedicated runs) and keep the others' runs")
    p.add_argument("--slack-bank-tpots", type=float, default=0.0,
                   help="bros and tempo: the scheduler's opt-in --slack-bank-tpots, live and simulated (default 0: off)")
    args = p.parse_args(argv)
    rerun = tuple(x.strip() for x in args.rerun.split(",") if x.strip())
    if rerun and (not args.resim or not set(rerun) <= set(POLICIES)):
        raise SystemExit(f"--rerun needs --resim and policies among {', '.join(POLICIES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = wl.cells(tuple(args.mixes), tuple(args.loads))
    live: dict[str, dict] = {c.name: {} for c in cells}
    started = time.time()
    load0 = os.getloadavg()

    def on_result(cell: wl.Cell, run: str, metrics: dict) -> None:
        live[cell.name][run] = metrics
        (out / "partial.json").write_text(json.dumps(live, indent=1) + "\n", encoding="utf-8")

    if args.resim:
        old = json.loads(Path(args.resim).read_text(encoding="utf-8"))
        live, infos = {c.name: old["live"][c.name] for c in cells}, old["workers"]
        live_wall_s, load0, load1 = old["live_wall_s"], old["load_avg_start"], old["load_avg_end"]
        if rerun:  # the runs replaced as they come in (on_result), the rest kept
            infos = {**infos, **run_live(cells, rerun, out, on_result, args.slack_bank_tpots)}
            live_wall_s, load1 = live_wall_s + time.time() - started, os.getloadavg()
    else:
        infos = run_live(cells, POLICIES, out, on_result, args.slack_bank_tpots)
        live_wall_s = time.time() - started
        load1 = os.getloadavg()
    sim: dict[str, dict] = {c.name: {} for c in cells}
    for cell in cells:
        for run in live[cell.name]:
            policy = "fcfs" if run == wl.DEDICATED else run
            sim[cell.name][run] = predict(cell, run, infos[policy], args.slack_bank_tpots)
    v = verdicts(live, sim)
    doc = {"scaling": {"time_scale": wl.TIME_SCALE, "max_prompt": wl.MAX_PROMPT, "max_long_prompt": wl.MAX_LONG_PROMPT,
                       "max_output": wl.MAX_OUTPUT, "window_s": wl.WINDOW_S, "loads": args.loads,
                       "mixes": {m: wl.MIXES[m] for m in args.mixes}},
           "slack_bank_tpots": args.slack_bank_tpots, "workers": infos, "live": live, "sim": sim, "verdicts": v,
           "live_wall_s": round(live_wall_s, 1), "load_avg_start": load0, "load_avg_end": load1}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    calib = "\n".join(f"- {p}'s worker: {json.dumps(i.get('step_cost'))}" for p, i in infos.items())
    table = (f"# Live suite ({len(cells)} cells, {live_wall_s / 60:.1f} min live, load average "
             f"{load0[0]:.1f} at start, {load1[0]:.1f} at end)\n\n## Targets\n\n{targets_table(live, v)}\n\n"
             f"## Simulator vs live\n\n{prediction_table(live, sim, v)}\n\n## Summary\n\n{summary_table(v)}\n\n"
             f"## Start-up calibrations\n\n{calib}\n")
    (out / "table.md").write_text(table, encoding="utf-8")
    plot_prediction(live, sim, out / "prediction.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
