"""The live suite's verdicts and tables.

Targets per cell, for bros and tempo (issue 9, live): *RT≈ded* RT attainment >= the dedicated
run's - 0.05; *BE* whole-job BE throughput (`be_throughput_run_tok_s`) >= 0.9x fcfs's (cells with
BE only). Prediction per cell and run (fcfs, bros, tempo, dedicated): *RT pred* |simulated -
live RT attainment| <= 0.05; *BE pred* simulated whole-job BE throughput within 15% of live's.
"""

from __future__ import annotations

RT_GAP = 0.05
BE_RATIO = 0.9
PRED_RT = 0.05
PRED_BE = 0.15
EVALUATED = ("bros", "tempo")
RUNS = ("fcfs", "bros", "tempo", "dedicated")


def _rt(m: dict | None) -> float | None:
    return None if m is None else m.get("rt_slo_attainment")


def _be(m: dict | None) -> float | None:
    return None if m is None else m.get("be_throughput_run_tok_s")


def verdicts(live: dict[str, dict], sim: dict[str, dict]) -> dict:
    """`live[cell][run]`, `sim[cell][run]` metrics -> {cell: {check: bool | None}} (None: n/a)."""
    out: dict[str, dict] = {}
    for cell, runs in live.items():
        v: dict[str, bool | None] = {}
        ded, fcfs_be = _rt(runs.get("dedicated")), _be(runs.get("fcfs"))
        for p in EVALUATED:
            rt, be = _rt(runs.get(p)), _be(runs.get(p))
            v[f"{p} RT≈ded"] = None if rt is None or ded is None else rt >= ded - RT_GAP
            v[f"{p} BE"] = None if be is None or not fcfs_be else be >= BE_RATIO * fcfs_be
        for run in RUNS:
            lm, sm = runs.get(run), sim.get(cell, {}).get(run)
            lrt, srt, lbe, sbe = _rt(lm), _rt(sm), _be(lm), _be(sm)
            v[f"{run} RT pred"] = None if lrt is None or srt is None else abs(srt - lrt) <= PRED_RT
            v[f"{run} BE pred"] = None if not lbe or sbe is None else abs(sbe / lbe - 1) <= PRED_BE
        out[cell] = v
    return out


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("✓" if ok else "✗")


def _f(v: float | None, spec: str = "{:.2f}") -> str:
    return "-" if v is None else spec.format(v)


def targets_table(live: dict[str, dict], v: dict) -> str:
    head = ("| cell | dedicated RT | fcfs RT | bros RT | tempo RT | bros RT≈ded | tempo RT≈ded | fcfs BE tok/s "
            "| bros BE / fcfs | tempo BE / fcfs | bros BE | tempo BE |")
    lines = [head, "|" + "---|" * 12]
    for cell, runs in live.items():
        fcfs_be = _be(runs.get("fcfs"))
        ratio = {p: (_be(runs.get(p)) / fcfs_be if fcfs_be and _be(runs.get(p)) is not None else None)
                 for p in EVALUATED}
        lines.append(f"| {cell} | {_f(_rt(runs.get('dedicated')))} | {_f(_rt(runs.get('fcfs')))} | "
                     f"{_f(_rt(runs.get('bros')))} | {_f(_rt(runs.get('tempo')))} | {_mark(v[cell]['bros RT≈ded'])} | "
                     f"{_mark(v[cell]['tempo RT≈ded'])} | {_f(fcfs_be, '{:.1f}')} | {_f(ratio['bros'])} | "
                     f"{_f(ratio['tempo'])} | {_mark(v[cell]['bros BE'])} | {_mark(v[cell]['tempo BE'])} |")
    return "\n".join(lines)


def prediction_table(live: dict[str, dict], sim: dict[str, dict], v: dict) -> str:
    lines = ["| cell | run | RT live | RT sim | RT ±0.05 | BE live tok/s | BE sim tok/s | BE ±15% "
             "| steps live / sim | ms a step live / sim |", "|" + "---|" * 10]
    for cell, runs in live.items():
        for run in RUNS:
            if run not in runs:
                continue
            lm, sm = runs[run], sim.get(cell, {}).get(run)
            lines.append(f"| {cell} | {run} | {_f(_rt(lm))} | {_f(_rt(sm))} | {_mark(v[cell][f'{run} RT pred'])} | "
                         f"{_f(_be(lm), '{:.1f}')} | {_f(_be(sm), '{:.1f}')} | {_mark(v[cell][f'{run} BE pred'])} | "
                         f"{_steps(lm)} / {_steps(sm)} | {_f(_step_ms(lm), '{:.0f}')} / {_f(_step_ms(sm), '{:.0f}')} |")
    return "\n".join(lines)


def _steps(m: dict | None) -> str:
    """The run's steps (a live run's from the scheduler's GetStats; none recorded before: -)."""
    return str(m["num_steps"]) if m and m.get("num_steps") else "-"


def _step_ms(m: dict | None) -> float | None:
    """Mean time a step, first arrival to the run's end over its steps: the cadence the
    simulator must match for its predictions to hold (step time and the gaps between steps)."""
    if not m or not m.get("num_steps") or m.get("end_s") is None:
        return None
    return 1000.0 * m["end_s"] / m["num_steps"]


def summary_table(v: dict) -> str:
    checks = sorted({k for cell in v.values() for k in cell}, key=lambda k: (k.split()[1:], k))
    lines = ["| check | met / cells where it applies |", "|---|---|"]
    for k in checks:
        vals = [cell[k] for cell in v.values() if cell.get(k) is not None]
        if vals:
            lines.append(f"| {k} | {sum(vals)}/{len(vals)} |")
    return "\n".join(lines)
