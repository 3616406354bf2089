"""Fits the step-time cost model to measured worker steps.

    python -m scheduler_svc.sim.calibrate --from-timings steps.jsonl --out cost_cpu.json
    python -m llmserve_stack.measure --out cost_cpu.json   # times worker_svc's steps in-process, then fits

A timings file has one JSON object per line with the StepTiming fields (`forward_ns`,
`sample_ns`, `total_ns`, `num_prefill_tokens`, `num_decode_seqs`, `num_kv_tokens_read`; extra
fields are ignored). The target is `total_ns` (`--target forward` fits `forward_ns + sample_ns`).
The fit is `llmserve.step_cost.fit_step_cost`, the one the worker runs on its own start-up
timings: ordinary least squares with non-negative coefficients, so noise cannot yield a model
that predicts cheaper steps for more work.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmserve.step_cost import StepCostFit, StepSample, fit_step_cost
from scheduler_svc.sim.cost_model import CostModel

FEATURES = ("num_prefill_tokens", "num_decode_seqs", "num_kv_tokens_read")


@dataclass(frozen=True)
class TimingRow:
    """One measured step: its sizes and its time in seconds."""

    prefill_tokens: int
    decode_seqs: int
    kv_tokens_read: int
    seconds: float


def read_timings(path: str | Path, target: str = "total") -> list[TimingRow]:
    """Reads StepTiming JSONL rows; `target` "total" uses total_ns, "forward" forward_ns + sample_ns.
    Rows with no work (0 tokens) or no time are skipped."""
    rows: list[TimingRow] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            obj = json.loads(line)
            obj = obj.get("timing", obj)  # accept rows that wrap the StepTiming in {"timing": {...}}
            try:
                ns = int(obj["total_ns"]) if target == "total" else int(obj["forward_ns"]) + int(obj.get("sample_ns", 0))
                row = TimingRow(int(obj.get("num_prefill_tokens", 0)), int(obj.get("num_decode_seqs", 0)),
                                int(obj.get("num_kv_tokens_read", 0)), ns / 1e9)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: line {n}: bad timing row ({exc})") from None
            if row.seconds > 0 and (row.prefill_tokens or row.decode_seqs):
                rows.append(row)
    return rows


def fit(rows: Sequence[TimingRow], name: str = "fitted") -> CostModel:
    """Non-negative least-squares fit of (a, b, c, d) (`llmserve.step_cost`, the worker's own
    start-up fit); raises ValueError with fewer than 4 rows."""
    result = fit_step_cost([StepSample(r.prefill_tokens, r.decode_seqs, r.kv_tokens_read, r.seconds) for r in rows])
    return cost_model_of(result, name)


def cost_model_of(result: StepCostFit, name: str, source: str = "") -> CostModel:
    """The simulator's CostModel of a fit, its statistics kept in `extra`."""
    c = result.cost
    extra = {"source": source or f"least-squares fit of {result.num_samples} measured worker steps",
             "fit_rows": result.num_samples, "fit_r2": round(result.r2, 6),
             "fit_median_rel_error": round(result.median_rel_error, 6)}
    return CostModel(c.a_s, c.b_s_per_prefill_token, c.c_s_per_decode_seq, c.d_s_per_kv_token, name=name, extra=extra)


def rows_from_dicts(objs: Iterable[dict]) -> list[TimingRow]:
    """TimingRows from in-memory StepTiming-like dicts (total_ns target)."""
    return [TimingRow(int(o.get("num_prefill_tokens", 0)), int(o.get("num_decode_seqs", 0)),
                      int(o.get("num_kv_tokens_read", 0)), int(o["total_ns"]) / 1e9) for o in objs]


def fit_and_save(rows: Sequence[TimingRow], out: str | Path, name: str, source: str,
                 deployment: dict | None = None) -> CostModel:
    """Fits `rows`, records where they came from (`source`) and the deployment they describe
    (`deployment`: the geometry fields `SimConfig.from_cost_model` reads) in the model's extra,
    writes `out`."""
    model = fit(rows, name=name)
    extra = {**model.extra, "source": f"{source}; {model.extra['source']}", **(deployment or {})}
    model = CostModel(model.a_s, model.b_s_per_prefill_token, model.c_s_per_decode_seq, model.d_s_per_kv_token,
                      name=model.name, extra=extra)
    model.save(out)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scheduler_svc.sim.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-timings", required=True, help="JSONL file of StepTiming rows")
    p.add_argument("--out", required=True, help="cost model JSON to write")
    p.add_argument("--name", default="cpu", help="name stored in the JSON")
    p.add_argument("--target", choices=("total", "forward"), default="total")
    args = p.parse_args(argv)
    try:
        model = fit_and_save(read_timings(args.from_timings, args.target), args.out, args.name,
                             f"fitted from {args.from_timings}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(model.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
