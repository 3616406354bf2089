"""The predicted-vs-measured plot of the live suite: one point per (cell, run)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sched_live_suite.report import PRED_BE, PRED_RT, RUNS

_COLORS = {"fcfs": "tab:gray", "bros": "tab:blue", "tempo": "tab:orange", "dedicated": "tab:green"}


def plot_prediction(live: dict[str, dict], sim: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rt, ax_be) = plt.subplots(1, 2, figsize=(11, 5))
    for run in RUNS:
        pts = [(live[c][run], sim[c][run]) for c in live if run in live[c] and run in sim.get(c, {})]
        rt = [(lm["rt_slo_attainment"], sm["rt_slo_attainment"]) for lm, sm in pts
              if lm.get("rt_slo_attainment") is not None and sm.get("rt_slo_attainment") is not None]
        be = [(lm["be_throughput_run_tok_s"], sm["be_throughput_run_tok_s"]) for lm, sm in pts
              if lm.get("be_throughput_run_tok_s") and sm.get("be_throughput_run_tok_s") is not None]
        if rt:
            ax_rt.scatter(*zip(*rt), label=run, color=_COLORS[run], alpha=0.8)
        if be:
            ax_be.scatter(*zip(*be), label=run, color=_COLORS[run], alpha=0.8)
    ax_rt.plot([0, 1], [0, 1], "k-", lw=0.8)
    ax_rt.fill_between([0, 1], [-PRED_RT, 1 - PRED_RT], [PRED_RT, 1 + PRED_RT], color="k", alpha=0.08)
    ax_rt.set(xlabel="RT SLO attainment, live", ylabel="simulated", title="RT attainment (band: ±0.05)",
              xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    top = 1.1 * max([1.0, *ax_be.get_xlim(), *ax_be.get_ylim()])
    ax_be.plot([0, top], [0, top], "k-", lw=0.8)
    ax_be.fill_between([0, top], [0, top * (1 - PRED_BE)], [0, top * (1 + PRED_BE)], color="k", alpha=0.08)
    ax_be.set(xlabel="BE whole-job tok/s, live", ylabel="simulated", title="BE throughput (band: ±15%)",
              xlim=(0, top), ylim=(0, top))
    ax_rt.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
