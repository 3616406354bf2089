"""The figures of a soak run (benchmarks/soak.py): request outcomes, TTFT percentiles, recovery
per fault, RSS growth per process, as a JSON-able summary, a markdown table and a PNG."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    """One logical request (the client resends it after an interrupted stream)."""

    prompt_index: int
    started_s: float
    first_token_s: float | None = None
    finished_s: float | None = None
    tokens: list[int] = field(default_factory=list)
    attempts: int = 0
    interrupted: int = 0  # attempts that ended UNAVAILABLE after some tokens (the gateway died)
    error: str = ""  # the last non-retryable error, or "gave up"

    @property
    def accepted(self) -> bool:
        """The stack took it: a token came back (a refusal or a dead gateway gives none)."""
        return self.first_token_s is not None

    @property
    def completed(self) -> bool:
        return self.finished_s is not None


@dataclass
class Fault:
    service: str
    killed_at_s: float
    restarted_s: float | None = None  # kill -> the new process SERVING
    resumed_s: float | None = None  # kill -> every stream open at the kill got a token (or ended)


@dataclass
class RssSample:
    t_s: float
    service: str
    pid: int
    rss_mb: float


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def rss_growth(samples: list[RssSample], warmup_s: float) -> list[dict[str, object]]:
    """Per process (service, pid) that lived at least two warm-ups: RSS once warm (its first sample
    `warmup_s` after it started, or after the run's start) against its last sample."""
    by_process: dict[tuple[str, int], list[RssSample]] = defaultdict(list)
    for sample in samples:
        by_process[(sample.service, sample.pid)].append(sample)
    rows = []
    for (service, pid), series in sorted(by_process.items(), key=lambda kv: kv[1][0].t_s):
        start = series[0].t_s
        warm = next((s for s in series if s.t_s >= start + warmup_s), None)
        last = series[-1]
        if warm is None or last.t_s - start < 2 * warmup_s:
            continue
        rows.append({"service": service, "pid": pid, "lived_s": round(last.t_s - start, 1),
                     "warm_rss_mb": round(warm.rss_mb, 1), "last_rss_mb": round(last.rss_mb, 1),
                     "growth": round(last.rss_mb / warm.rss_mb - 1.0, 4)})
    return rows


def summarize(outcomes: list[Outcome], faults: list[Fault], rss: list[RssSample], reference: list[list[int]],
              settings: dict[str, object]) -> dict[str, object]:
    accepted = [o for o in outcomes if o.accepted]
    completed = [o for o in outcomes if o.completed]
    ttfts = [o.first_token_s - o.started_s for o in accepted]  # type: ignore[operator]
    growth = rss_growth(rss, float(settings["warmup_s"]))  # type: ignore[arg-type]
    return {
        "settings": settings,
        "requests": {
            "started": len(outcomes),
            "accepted": len(accepted),
            "completed": len(completed),
            "lost": sum(1 for o in accepted if not o.completed),
            "mismatched": sum(1 for o in completed if o.tokens != reference[o.prompt_index]),
            "interrupted_and_resent": sum(o.interrupted for o in outcomes),
            "errors": sorted({o.error for o in outcomes if o.error}),
        },
        "ttft_ms": {"p50": _ms(percentile(ttfts, 50)), "p99": _ms(percentile(ttfts, 99))},
        "faults": [vars(f) for f in faults],
        "rss_growth": growth,
        "max_rss_growth": max((float(r["growth"]) for r in growth), default=None),  # type: ignore[arg-type]
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def markdown(summary: dict[str, Any]) -> str:
    s, r, t = summary["settings"], summary["requests"], summary["ttft_ms"]
    lines = [
        f"Soak: {s['streams']} streams for {s['minutes']} min, a fault every {s['fault_every_s']} s "
        f"(one of {', '.join(s['faults'])}), {s['max_tokens']} tokens per request, {s['workers']} workers.",
        "",
        "| accepted | completed | lost | tokens differ | interrupted, resent by the client | TTFT p50 ms "
        "| TTFT p99 ms | max RSS growth |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['accepted']} | {r['completed']} | {r['lost']} | {r['mismatched']} | {r['interrupted_and_resent']} "
        f"| {t['p50']} | {t['p99']} | {_pct(summary['max_rss_growth'])} |",
        "",
        "| fault at s | killed | back SERVING after s | every open stream resumed after s |",
        "|---|---|---|---|",
    ]
    for f in summary["faults"]:
        lines.append(f"| {f['killed_at_s']:.1f} | {f['service']} | {_num(f['restarted_s'])} | {_num(f['resumed_s'])} |")
    lines += ["", "| process | pid | lived s | RSS warm MB | RSS last MB | growth |", "|---|---|---|---|---|---|"]
    for g in summary["rss_growth"]:
        lines.append(f"| {g['service']} | {g['pid']} | {g['lived_s']} | {g['warm_rss_mb']} | {g['last_rss_mb']} "
                     f"| {_pct(g['growth'])} |")
    if r["errors"]:
        lines += ["", f"Errors: {', '.join(r['errors'])}"]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _pct(value: object) -> str:
    return "—" if value is None else f"{float(value) * 100:+.1f}%"  # type: ignore[arg-type]


def plot_rss(rss: list[RssSample], faults: list[Fault], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    by_process: dict[tuple[str, int], list[RssSample]] = defaultdict(list)
    for sample in rss:
        by_process[(sample.service, sample.pid)].append(sample)
    colors: dict[str, object] = {}
    for (service, _), series in by_process.items():
        line, = ax.plot([s.t_s for s in series], [s.rss_mb for s in series], color=colors.get(service),
                        label=None if service in colors else service)
        colors.setdefault(service, line.get_color())
    for fault in faults:
        ax.axvline(fault.killed_at_s, color="grey", linestyle=":", linewidth=1)
        ax.text(fault.killed_at_s, ax.get_ylim()[1], fault.service, rotation=90, va="top", ha="right", fontsize=7)
    ax.set_xlabel("time since start, s (dotted: a kill)")
    ax.set_yscale("log")  # workers hold the model: gigabytes, the others tens of megabytes
    ax.set_ylabel("RSS, MB (log)")
    ax.set_title("RSS per process (a restarted service starts a new line)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
