"""Per policy over all cells of each half of a suite results.json: by how much it is off each
target on average and at worst (docs/scheduling.md, section 1's second table).

    .venv/bin/python -m benchmarks.sched_suite.gaps bench_out/g/results.json

RT gap: hybrid − dedicated RT attainment where dedicated meets >= 0.95; BE: whole-job BE
throughput / fcfs's; preemptions and recomputed BE KV tokens summed over the cells; overload gap:
RT − the best of fcfs/priority/edf where dedicated misses; DL gap: deadline attainment − edf's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.sched_suite.runner import DEDICATED
from benchmarks.sched_suite.targets import BASELINES, DEDICATED_FEASIBLE

POLICIES = ("fcfs", "priority", "edf", "bros", "tempo")


def _mean_min(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):+.{digits}f} / {min(values):+.{digits}f}"


def gaps_row(cells: list[dict], policy: str) -> str:
    rt, be, overload, dl = [], [], [], []
    preemptions = recomputed = 0
    for cell in cells:
        runs = cell["runs"]
        if policy not in runs:
            continue
        m = runs[policy]
        preemptions += m.get("preemptions") or 0
        recomputed += m.get("be_recomputed_tokens") or 0
        if DEDICATED in runs:
            ded = runs[DEDICATED]["rt_slo_attainment"]
            if ded >= DEDICATED_FEASIBLE:
                rt.append(m["rt_slo_attainment"] - ded)
            elif all(b in runs for b in BASELINES):
                overload.append(m["rt_slo_attainment"] - max(runs[b]["rt_slo_attainment"] for b in BASELINES))
        fcfs_be = runs.get("fcfs", {}).get("be_throughput_run_tok_s")
        if fcfs_be and m.get("be_throughput_run_tok_s") is not None:
            be.append(m["be_throughput_run_tok_s"] / fcfs_be)
        edf_dl = runs.get("edf", {}).get("deadline_slo_attainment")
        if edf_dl is not None and m.get("deadline_slo_attainment") is not None:
            dl.append(m["deadline_slo_attainment"] - edf_dl)
    be_cell = f"{sum(be) / len(be):.3f} / {min(be):.3f}" if be else "-"
    worst_overload = f"{min(overload):+.3f}" if overload else "-"
    return (f"| {policy} | {_mean_min(rt)} | {be_cell} | {preemptions:,} | {recomputed:,} | {worst_overload} | "
            f"{_mean_min(dl)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    doc = json.loads(args.results.read_text())
    print("| half | policy | RT gap mean / min | BE ratio mean / min | preemptions | BE tokens recomputed "
          "| overload gap min | DL gap mean / min |")
    print("|---|---|---|---|---|---|---|---|")
    for half, data in doc["halves"].items():
        for policy in POLICIES:
            print(f"| {half} " + gaps_row(data["cells"], policy))


if __name__ == "__main__":
    main()
