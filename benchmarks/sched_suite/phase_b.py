"""Issue 9's targets 4 and 5 from a suite results.json (benchmarks/sched_generalization.py run
with `--policies ...,tempo-oracle,bros+admission,tempo+admission,...`): markdown tables.

    .venv/bin/python -m benchmarks.sched_suite.phase_b bench_out/g/results.json [--half held_out]

Target 4: per cell, tempo's service gain (total) over tempo-oracle's; met where >= 0.95.
Target 5: per policy with `+admission` runs, on the cells past the dedicated-feasible load
(dedicated < 0.95) RT attainment without and with admission control (all RT requests, a rejection
counted as a miss; and of the admitted ones) beside the best of fcfs/priority/edf, and on the
feasible cells how many RT requests it rejected; the TTFT forecast's median absolute error.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.sched_suite.runner import ADMISSION, DEDICATED
from benchmarks.sched_suite.targets import BASELINES, DEDICATED_FEASIBLE, ORACLE, ORACLE_GAIN_SHARE


def oracle_table(cells: list[dict]) -> str:
    ratios = [(c["runs"]["tempo"]["service_gain_total"] / c["runs"][ORACLE]["service_gain_total"], c)
              for c in cells if "tempo" in c["runs"] and ORACLE in c["runs"] and c["runs"][ORACLE]["service_gain_total"]]
    if not ratios:
        return "no tempo / tempo-oracle runs"
    met = sum(1 for r, _ in ratios if r >= ORACLE_GAIN_SHARE - 1e-9)
    worst = sorted(ratios, key=lambda rc: rc[0])[:5]
    lines = [f"tempo >= {ORACLE_GAIN_SHARE:.0%} of tempo-oracle's service gain: **{met}/{len(ratios)}** cells; "
             f"ratio median {statistics.median(r for r, _ in ratios):.3f}, min {worst[0][0]:.3f}", "",
             "| worst cells | load | gain tempo / oracle | RT tempo | RT oracle | DL tempo | DL oracle | WF tempo | WF oracle |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r, c in worst:
        t, o = c["runs"]["tempo"], c["runs"][ORACLE]
        lines.append(f"| {c['workload']} | x{c['load']:g} | {r:.3f} | " + " | ".join(
            _f(m.get(k)) for k in ("rt_slo_attainment", "deadline_slo_attainment", "workflow_slo_attainment")
            for m in (t, o)) + " |")
    return "\n".join(lines)


def _f(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


def admission_table(cells: list[dict]) -> str:
    lines = []
    policies = sorted({p.removesuffix(ADMISSION) for c in cells for p in c["runs"] if p.endswith(ADMISSION)})
    for policy in policies:
        on = policy + ADMISSION
        both = [c for c in cells if policy in c["runs"] and on in c["runs"] and DEDICATED in c["runs"]]
        over = [c for c in both if c["runs"][DEDICATED]["rt_slo_attainment"] is not None
                and c["runs"][DEDICATED]["rt_slo_attainment"] < DEDICATED_FEASIBLE - 1e-9]
        feasible = [c for c in both if c not in over and c["runs"][DEDICATED]["rt_slo_attainment"] is not None]
        lines += [f"\n**{policy}**, overload cells (dedicated < {DEDICATED_FEASIBLE}):\n",
                  "| cell | load | RT ded | best baseline | RT off | RT on (all) | RT on (admitted) | rejected / RT | "
                  "BE job tput on/off |", "|---|---|---|---|---|---|---|---|---|"]
        for c in over:
            r = c["runs"]
            best = max((r[b]["rt_slo_attainment"] for b in BASELINES if b in r), default=None)
            be = (r[on]["be_throughput_run_tok_s"] or 0) / max(r[policy]["be_throughput_run_tok_s"] or 1e-9, 1e-9)
            n_rt = r[DEDICATED]["num_requests"]  # the dedicated run is the RT requests alone
            lines.append(f"| {c['workload']} | x{c['load']:g} | {_f(r[DEDICATED]['rt_slo_attainment'])} | {_f(best)} | "
                         f"{_f(r[policy]['rt_slo_attainment'])} | {_f(r[on]['rt_slo_attainment'])} | "
                         f"{_f(r[on]['rt_slo_attainment_admitted'])} | {r[on]['rt_rejected']} / {n_rt} | {be:.3f} |")
        rejected = [c["runs"][on]["rt_rejected"] for c in feasible]
        rt_total = sum(c["runs"][DEDICATED]["num_requests"] for c in feasible)
        errors = [c["runs"][on]["rt_ttft_forecast_abs_err_p50_ms"] for c in both
                  if c["runs"][on].get("rt_ttft_forecast_abs_err_p50_ms") is not None]
        signed = [c["runs"][on]["rt_ttft_forecast_err_p50_ms"] for c in both
                  if c["runs"][on].get("rt_ttft_forecast_err_p50_ms") is not None]
        lost = [c["runs"][policy]["rt_slo_attainment"] - c["runs"][on]["rt_slo_attainment"] for c in feasible]
        lines += ["", f"feasible cells (dedicated >= {DEDICATED_FEASIBLE}): {len(feasible)}; RT requests rejected: "
                      f"**{sum(rejected)} of {rt_total}** ({sum(rejected) / max(rt_total, 1):.2%}), in "
                      f"{sum(1 for n in rejected if n)} cells, at most {max(rejected, default=0)} in one; RT attainment "
                      f"lost to admission control there: max {max(lost, default=0):.3f}",
                  f"TTFT forecast of admitted RT requests: median |predicted - actual| per cell, median over "
                  f"{len(errors)} cells {statistics.median(errors) if errors else float('nan'):.1f} ms (max "
                  f"{max(errors, default=float('nan')):.1f}); median signed error (predicted - actual) "
                  f"{statistics.median(signed) if signed else float('nan'):.1f} ms"]
    return "\n".join(lines) if lines else "no +admission runs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--half", default="held_out")
    args = p.parse_args(argv)
    cells = json.loads(Path(args.results).read_text(encoding="utf-8"))["halves"][args.half]["cells"]
    print(f"## Target 4 ({args.half})\n\n{oracle_table(cells)}\n\n## Target 5 ({args.half})\n{admission_table(cells)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
