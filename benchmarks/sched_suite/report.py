"""The suite's outputs: the target table (markdown) and the pass/fail heatmap (PNG)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sched_suite.targets import EVALUATED_POLICIES, TARGETS, TEMPO_ONLY, summarize_targets

_MARK = {True: "✓", False: "✗", None: "·"}
_SHORT = {"rt_dedicated": "RT≈ded", "be_throughput": "BE tput", "be_preemptions": "BE pre", "be_recompute": "BE rec",
          "deadline": "DL≥edf", "workflow": "WF best", "gain": "gain best", "overload": "overload",
          "oracle": "≥95% oracle"}


def _columns() -> list[tuple[str, str]]:
    return [(p, t) for p in EVALUATED_POLICIES for t in TARGETS if p == "tempo" or t not in TEMPO_ONLY]


def summary_table(cells: list[dict]) -> str:
    """Met / missed (n/a) per policy and target."""
    counts = summarize_targets(cells)
    lines = ["| policy | " + " | ".join(_SHORT[t] for t in TARGETS) + " |",
             "|---|" + "---|" * len(TARGETS)]
    for policy in EVALUATED_POLICIES:
        row = []
        for t in TARGETS:
            c = counts[policy][t]
            applicable = c["met"] + c["missed"]
            row.append("-" if not applicable else f"{c['met']}/{applicable}")
        lines.append(f"| {policy} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def cell_table(cells: list[dict]) -> str:
    """One row per cell: RT attainment of dedicated / fcfs / bros / tempo, then ✓ ✗ · per target."""
    cols = _columns()
    head = ["workload", "load", "RT ded", "RT fcfs", "RT bros", "RT tempo", "BE bros/fcfs", "BE tempo/fcfs",
            "gain tempo/oracle",
            *(f"{p[0]}:{_SHORT[t]}" for p, t in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        runs = cell["runs"]

        def rt(name: str) -> str:
            v = runs.get(name, {}).get("rt_slo_attainment")
            return "-" if v is None else f"{v:.2f}"

        def be_ratio(name: str) -> str:
            a, b = runs.get(name, {}).get("be_throughput_run_tok_s"), runs.get("fcfs", {}).get("be_throughput_run_tok_s")
            return "-" if not a or not b else f"{a / b:.2f}"

        def gain_ratio() -> str:
            a = runs.get("tempo", {}).get("service_gain_total")
            b = runs.get("tempo-oracle", {}).get("service_gain_total")
            return "-" if a is None or not b else f"{a / b:.3f}"

        marks = [_MARK[cell["targets"].get(p, {}).get(t)] for p, t in cols]
        lines.append("| " + " | ".join([cell["workload"], f"x{cell['load']:g}", rt("dedicated"), rt("fcfs"), rt("bros"),
                                        rt("tempo"), be_ratio("bros"), be_ratio("tempo"), gain_ratio(), *marks]) + " |")
    return "\n".join(lines)


def heatmap(halves: dict[str, list[dict]], out: Path) -> Path:
    """Cells (rows) x policy:target (columns), green met, red missed, grey n/a; one panel per half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cols = _columns()
    value = {None: 0, False: 1, True: 2}
    cmap = ListedColormap(["#e6e6e6", "#d7301f", "#1a9850"])
    rows = max(len(c) for c in halves.values())
    fig, axes = plt.subplots(1, len(halves), figsize=(6.5 * len(halves), 2.0 + 0.11 * rows), squeeze=False)
    for ax, (name, cells) in zip(axes[0], halves.items()):
        grid = [[value[cell["targets"].get(p, {}).get(t)] for p, t in cols] for cell in cells]
        ax.imshow(grid or [[0] * len(cols)], aspect="auto", cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_xticks(range(len(cols)), [f"{p}: {_SHORT[t]}" for p, t in cols], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(cells)), [f"{c['workload']} x{c['load']:g}" for c in cells], fontsize=4.5)
        met = sum(1 for row in grid for v in row if v == 2)
        applicable = sum(1 for row in grid for v in row if v)
        ax.set_title(f"{name} half: {met}/{applicable} checks met (green met, red missed, grey n/a)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
