"""The markdown report of one `bench_stack.py` run: throughput and latency per engine and number of
streams, the ratios the issue-10 targets are stated in, prefill throughput, and the engine's FLOP/s
against the machine's GEMM ceiling."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench_common import PrefillRow, Row
from gemm_ceiling import GemmRow, ceiling, model_flops
from hf_runs import HF_STATIC
from llmserve_runs import INPROC, STACK

_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f")


@dataclass(frozen=True)
class Report:
    args: argparse.Namespace
    config: Any  # worker_svc ModelConfig
    engine_dtype: str
    rows: list[Row]
    prefill: list[PrefillRow]
    gemm: list[GemmRow] | None
    prompt_lens: list[int]
    started: float  # unix time


def _machine() -> str:
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return f"{name} ({' '.join(f for f in _CPU_FLAGS if f in flags) or 'no AVX512/AMX'})"


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _get(rows: list[Row], engine: str, streams: int) -> Row | None:
    return next((r for r in rows if r.engine == engine and r.streams == streams), None)


def _hf_best(rows: list[Row], streams: int) -> Row | None:
    hf = [r for r in rows if r.engine.startswith(HF_STATIC) and r.streams == streams]
    return max(hf, key=lambda r: r.throughput_tok_s) if hf else None


def _decode_flops_per_token(report: Report) -> float:
    context = statistics.mean(report.prompt_lens) + report.args.max_tokens / 2
    return model_flops(report.config, 1, round(context), 1)


def _tables(report: Report) -> list[str]:
    levels = report.args.streams
    engines = list(dict.fromkeys(r.engine for r in report.rows))
    head = "| engine | " + " | ".join(f"{s} stream{'s' if s > 1 else ''}" for s in levels) + " |"
    sep = "|---|" + "---|" * len(levels)
    def throughput(r: Row) -> str:
        return f"{r.throughput_tok_s:.1f} [{r.load1:.1f}]"

    def latency(r: Row) -> str:
        return f"{_fmt(r.ttft_p50_ms)} / {_fmt(r.tpot_p50_ms)}"

    lines = []
    for title, cell in (("Output tokens/s (fastest of the repeats; the 1-minute load average after it in brackets):",
                         throughput), ("TTFT p50 / TPOT p50, ms:", latency)):
        lines += ([""] if lines else []) + [title, "", head, sep]
        for e in engines:
            cells = [cell(r) if (r := _get(report.rows, e, s)) else "—" for s in levels]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


def _ratios(report: Report) -> list[str]:
    lines = ["", "| streams | transformers best mode | stack / transformers best | stack / in-process | "
             "in-process / transformers best |", "|---|---|---|---|---|"]
    for s in report.args.streams:
        stack, inproc, best = _get(report.rows, STACK, s), _get(report.rows, INPROC, s), _hf_best(report.rows, s)

        def ratio(a: Row | None, b: Row | None) -> str:
            return f"{a.throughput_tok_s / b.throughput_tok_s:.2f}x" if a and b else "—"

        mode = best.engine.removeprefix(HF_STATIC).strip() if best else "—"
        lines.append(f"| {s} | {mode} | **{ratio(stack, best)}** | {ratio(stack, inproc)} | {ratio(inproc, best)} |")
    stack, inproc = _get(report.rows, STACK, 1), _get(report.rows, INPROC, 1)
    if stack and inproc and stack.ttft_p50_ms is not None and inproc.ttft_p50_ms is not None:
        allowed = 1.0 + 0.1 * inproc.ttft_p50_ms
        added = stack.ttft_p50_ms - inproc.ttft_p50_ms
        lines += ["", f"- TTFT p50 at 1 stream: stack {stack.ttft_p50_ms:.1f} ms, in-process "
                      f"{inproc.ttft_p50_ms:.1f} ms: the hops add **{added:+.1f} ms** (target: within 1 ms + 10% = "
                      f"{allowed:.1f} ms)"]
    return lines


def _prefill(report: Report) -> list[str]:
    n = report.args.prefill_tokens
    lines = ["", f"Prefill: time to the first token of one {n}-token prompt (fastest of the repeats):", "",
             "| engine | s | prompt tok/s |", "|---|---|---|"]
    lines += [f"| {p.engine} | {p.seconds:.3f} | {p.tok_s:.0f} |" for p in report.prefill]
    return lines


def _flops(report: Report) -> list[str]:
    if not report.gemm:
        return []
    best = ceiling(report.gemm)
    top = max(report.args.streams)
    lines = ["", f"GEMM ceiling at the model's shapes (`benchmarks/gemm_ceiling.py`, one decoder layer's projections): "
                 f"**{best.layer_gflops:.0f} GFLOP/s** ({best.path}, {best.rows} rows).", "",
             "| path | " + " | ".join(f"{g.rows} rows" for g in report.gemm if g.path == best.path) + " |",
             "|---|" + "---|" * sum(g.path == best.path for g in report.gemm)]
    for path in dict.fromkeys(g.path for g in report.gemm):
        lines.append(f"| {path} | " + " | ".join(f"{g.layer_gflops:.0f}" for g in report.gemm if g.path == path) + " |")
    lines += ["", "| work | GFLOP/s | fraction of the ceiling |", "|---|---|---|"]
    per_token = _decode_flops_per_token(report)
    for engine in (STACK, INPROC):
        if r := _get(report.rows, engine, top):
            rate = r.output_tokens * per_token / r.wall_s / 1e9
            lines.append(f"| {engine}: decode at {top} streams | {rate:.0f} | {rate / best.layer_gflops:.0%} |")
    n = report.args.prefill_tokens
    prefill_flops = model_flops(report.config, n, n * (n + 1) // 2, 1)
    for p in report.prefill:
        if p.engine in (STACK, INPROC):
            rate = prefill_flops / p.seconds / 1e9
            lines.append(f"| {p.engine}: prefill of {n} tokens | {rate:.0f} | {rate / best.layer_gflops:.0%} |")
    return lines


# The worker's phases (worker_svc/step_phases.py), in the table's order: the step's, then between steps.
PHASES = ("forward", "sample", "prepare", "commit", "lazy_checkpoint", "dispatch", "kv", "plan_decode", "other",
          "encode", "report", "idle")


def _worker_time(report: Report) -> list[str]:
    """Where the stack's worker spent each level's wall time (its step phases over the fastest
    try, from its /metrics); "run ends" is the client's wall time that no phase covers (the first
    requests' way to the worker, the last results' way back, the worker idle without requests);
    "outside the forward pass" is everything but `forward`: issue 10's per-step overhead."""
    rows = [r for s in report.args.streams if (r := _get(report.rows, STACK, s)) and r.worker_phases_s]
    if not rows:
        return []
    lines = ["", "The stack's worker: the client's wall time by the worker's phase, % (worker_svc/step_phases.py; "
                 "`idle`: waiting for a plan with requests in flight; dispatch (to the forward thread / back)):", "",
             "| streams | " + " | ".join(PHASES) + " | run ends | outside the forward pass |",
             "|---|" + "---|" * (len(PHASES) + 2)]
    for r in rows:
        phases = dict(r.worker_phases_s)
        ends = max(0.0, r.wall_s - sum(phases.get(p, 0.0) for p in PHASES))
        cells = [f"{100 * phases.get(p, 0.0) / r.wall_s:.1f}" for p in PHASES]
        if "to_thread" in phases:  # dispatch's parts: to the forward thread / back to the loop
            at = PHASES.index("dispatch")
            to, back = (100 * phases.get(p, 0.0) / r.wall_s for p in ("to_thread", "from_thread"))
            cells[at] += f" ({to:.1f}/{back:.1f})"
        outside = 100 * (1 - phases.get("forward", 0.0) / r.wall_s)
        lines.append(f"| {r.streams} | " + " | ".join(cells) + f" | {100 * ends / r.wall_s:.1f} | **{outside:.1f}** |")
    return lines


def to_markdown(report: Report) -> str:
    import torch

    a = report.args
    loads = [r.load1 for r in report.rows] + [p.load1 for p in report.prefill]
    header = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M', time.localtime(report.started))}: {_machine()}, torch "
        f"{torch.__version__}, {a.threads} threads per engine, OMP_WAIT_POLICY={a.omp_wait_policy} "
        f"GOMP_SPINCOUNT={a.gomp_spincount}; model {a.model} "
        f"({a.load_format} weights), llmserve in {report.engine_dtype.removeprefix('torch.')} (--dtype {a.dtype}), "
        f"policy {a.policy}, {a.max_tokens} new tokens per request (greedy, EOS ignored), the 1-stream level is "
        f"{a.sequential_requests} requests one after another; 1-minute load average during the run "
        f"{min(loads):.1f}–{max(loads):.1f}.",
        "",
    ]
    return "\n".join(header + _tables(report) + _ratios(report) + _worker_time(report) + _prefill(report)
                     + _flops(report)) + "\n"
