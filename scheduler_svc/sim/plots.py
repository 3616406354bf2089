"""PNG plots of bench results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from scheduler_svc.sim.metrics import RequestRecord
from scheduler_svc.sim.workload import BEST_EFFORT, DEADLINE, REAL_TIME


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(sweep: Mapping[float, Mapping[str, Mapping[str, object]]], out: str | Path, title: str = "") -> Path:
    """SLO attainment per class and BE throughput against load.

    `sweep` maps a rate scale to {policy: metrics}; one line per policy in each panel, panels
    for the metrics present (a class absent from the workload has no panel).
    """
    plt = _pyplot()
    scales = sorted(sweep)
    policies = list(next(iter(sweep.values())).keys()) if sweep else []
    panels = [(k, label) for k, label in (
        ("rt_slo_attainment", "real-time SLO attainment"),
        ("deadline_slo_attainment", "deadline SLO attainment"),
        ("workflow_slo_attainment", "workflow SLO attainment"),
        ("be_throughput_tok_s", "BE throughput in the load window (tok/s)"),
        ("be_throughput_run_tok_s", "BE throughput, whole job (tok/s)"),
        ("service_gain", "service gain"),
    ) if any(sweep[s][p].get(k) is not None for s in scales for p in policies)]
    ncols = min(3, max(len(panels), 1))
    nrows = -(-max(len(panels), 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, label) in zip(flat, panels):
        for policy in policies:
            ys = [sweep[s][policy].get(key) for s in scales]
            xs = [x for x, y in zip(scales, ys) if y is not None]
            ax.plot(xs, [y for y in ys if y is not None], marker="o", label=policy)
        ax.set_xlabel("load (rate scale)")
        ax.set_title(label, fontsize=10)
        if "attainment" in key:
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency_cdf(records: Mapping[str, Sequence[RequestRecord]], end_s: Mapping[str, float], out: str | Path,
                     title: str = "") -> Path:
    """Per-policy CDFs: real-time TTFT, real-time mean TPOT, and completion time of deadline and
    best-effort requests (censored at the end of the run: a never-served request sits at the end)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    series = (
        ("real-time TTFT (s)", lambda r, e: r.ttft_s(e) if r.request.cls == REAL_TIME else None),
        ("real-time mean TPOT (ms)", lambda r, e: (t * 1000 if (t := r.mean_tpot_s()) is not None else None)
         if r.request.cls == REAL_TIME else None),
        ("deadline / BE latency (s)", lambda r, e: ((r.finish_s if r.finish_s is not None else e) - r.arrival_s)
         if r.request.cls in (DEADLINE, BEST_EFFORT) else None),
    )
    for ax, (label, fn) in zip(axes, series):
        for policy, recs in records.items():
            values = sorted(v for r in recs if (v := fn(r, end_s[policy])) is not None)
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, where="post", label=policy)
        ax.set_xlabel(label)
        ax.set_ylabel("CDF")
        if "TPOT" not in label:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(out)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
