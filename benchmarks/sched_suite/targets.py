"""The issue-9 targets, evaluated per cell (one workload at one load) for bros and tempo.

Each check returns True (met), False (missed) or None (does not apply to the cell):

- `rt_dedicated` (1): where the dedicated run meets >= 0.95 of RT SLOs, the hybrid run meets
  >= dedicated - 0.02.
- `be_throughput` (2): `be_throughput_run_tok_s` >= 0.95 x fcfs's.
- `be_preemptions` (2): BE preemptions per completed BE request <= 1 on average.
- `be_recompute` (2): recomputed BE KV tokens "about 0": at most 1% of the BE prompt tokens.
- `deadline` (3): deadline-class attainment >= edf's.
- `workflow` (3, tempo): workflow attainment >= every other policy's.
- `gain` (3, tempo): service gain >= every other policy's (on the workflow workloads, where the
  issue states it), the run's total (`service_gain_total`): per second of the arrival window it
  would reward a policy for releasing the last workflow calls early, since a call arrives when
  its dependencies finish.
- `overload` (5): where the dedicated run meets < 0.95, RT attainment >= the best of
  fcfs / priority / edf.

- `oracle` (4, tempo): service gain (`service_gain_total`) >= 0.95 x that of `tempo-oracle`, the
  same policy told every true output length (simulator only, scheduler_svc/sim/oracle_lengths.py).

A check whose runs are missing from the cell (a suite run with `--policies` naming a few) does not
apply. Target 5's admission control is reported beside the cells (`+admission` runs,
admission.py), not as a verdict: the issue asks it to exist and to reject only past the
dedicated-feasible load.
"""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.sched_suite.runner import DEDICATED

TARGETS: tuple[str, ...] = ("rt_dedicated", "be_throughput", "be_preemptions", "be_recompute", "deadline",
                            "workflow", "gain", "overload", "oracle")
TEMPO_ONLY = frozenset({"workflow", "gain", "oracle"})
ORACLE = "tempo-oracle"
ORACLE_GAIN_SHARE = 0.95
EVALUATED_POLICIES = ("bros", "tempo")
BASELINES = ("fcfs", "priority", "edf")
DEDICATED_FEASIBLE = 0.95
RT_SLACK = 0.02
BE_THROUGHPUT_SHARE = 0.95
BE_RECOMPUTE_SHARE = 0.01
_EPS = 1e-9


def _ge(a: float | None, b: float | None, slack: float = 0.0) -> bool | None:
    if a is None or b is None:
        return None
    return a >= b - slack - _EPS


def evaluate(policy: str, runs: Mapping[str, Mapping]) -> dict[str, bool | None]:
    """The targets of `policy` in one cell; `runs` maps a policy name (and DEDICATED) to metrics."""
    out: dict[str, bool | None] = dict.fromkeys(TARGETS)
    if policy not in runs:
        return out
    m, fcfs, dedicated = runs[policy], runs.get("fcfs"), runs.get(DEDICATED)
    rt, ded = m["rt_slo_attainment"], dedicated["rt_slo_attainment"] if dedicated else None
    if rt is not None and ded is not None:
        if ded >= DEDICATED_FEASIBLE - _EPS:
            out["rt_dedicated"] = _ge(rt, ded, RT_SLACK)
        elif any(b in runs for b in BASELINES):
            best = max(runs[b]["rt_slo_attainment"] for b in BASELINES if b in runs)
            out["overload"] = _ge(rt, best)
    if m["be_throughput_run_tok_s"] is not None:
        if fcfs is not None:
            out["be_throughput"] = _ge(m["be_throughput_run_tok_s"],
                                       BE_THROUGHPUT_SHARE * fcfs["be_throughput_run_tok_s"])
        out["be_preemptions"] = m["be_preemptions_per_completed"] <= 1.0 + _EPS
        if m.get("be_recomputed_tokens") is not None:
            out["be_recompute"] = m["be_recomputed_tokens"] <= BE_RECOMPUTE_SHARE * max(m["be_prompt_tokens"], 1)
    if "edf" in runs:
        out["deadline"] = _ge(m["deadline_slo_attainment"], runs["edf"]["deadline_slo_attainment"])
    if policy == "tempo" and ORACLE in runs:
        out["oracle"] = m["service_gain_total"] >= ORACLE_GAIN_SHARE * runs[ORACLE]["service_gain_total"] - _EPS
    if policy == "tempo":
        # Against the policies an operator could serve (not the oracle, nor admission variants).
        others = [p for p in runs if p not in (policy, DEDICATED, ORACLE) and "+" not in p]
        if m["workflow_slo_attainment"] is not None and others:
            out["workflow"] = all(_ge(m["workflow_slo_attainment"], runs[p]["workflow_slo_attainment"]) for p in others)
            out["gain"] = all(_ge(m["service_gain_total"], runs[p]["service_gain_total"]) for p in others)
    return out


def summarize_targets(cells: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """{policy: {target: {"met", "missed", "n/a"}}} over cells (each with `targets[policy]`)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for policy in EVALUATED_POLICIES:
        counts = out.setdefault(policy, {})
        for target in TARGETS:
            c = counts.setdefault(target, {"met": 0, "missed": 0, "n/a": 0})
            for cell in cells:
                verdict = cell["targets"].get(policy, {}).get(target)
                c["n/a" if verdict is None else "met" if verdict else "missed"] += 1
    return out
