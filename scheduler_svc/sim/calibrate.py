"""Fits the step-time cost model to measured worker steps.

    python -m scheduler_svc.sim.calibrate --from-timings steps.jsonl --out cost_cpu.json
    python -m llmserve_stack.measure --out cost_cpu.json   # times worker_svc's steps in-process, then fits

A timings file has one JSON object per line with the StepTiming fields (`forward_ns`,
`sample_ns`, `total_ns`, `num_prefill_tokens`, `num_decode_seqs`, `num_kv_tokens_read`; extra
fields are ignored). The target is `total_ns` (`--target forward` fits `forward_ns + sample_ns`).
The fit is ordinary least squares with non-negative coefficients (a small active-set loop: a
negative coefficient is pinned to 0 and the rest refitted), so noise cannot yield a model that
predicts cheaper steps for more work.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """Non-negative least-squares fit of (a, b, c, d); raises ValueError with fewer than 4 rows."""
    if len(rows) < 4:
        raise ValueError(f"need at least 4 timing rows to fit 4 coefficients, got {len(rows)}")
    x = np.array([[1.0, r.prefill_tokens, r.decode_seqs, r.kv_tokens_read] for r in rows])  # [n, 4]
    y = np.array([r.seconds for r in rows])  # [n]
    # Scale columns so lstsq is well conditioned (kv tokens reach 1e5 while the constant is 1).
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)  # [4]
    xs = x / scale
    active = [True] * 4
    coef = np.zeros(4)
    for _ in range(4):
        cols = [i for i in range(4) if active[i]]
        sol, *_ = np.linalg.lstsq(xs[:, cols], y, rcond=None)
        coef = np.zeros(4)
        coef[cols] = sol
        negative = [i for i in cols if coef[i] < 0 and i != 0]
        if not negative:
            break
        active[min(negative, key=lambda i: coef[i])] = False
    coef = coef / scale
    pred = x @ coef
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1e-30
    rel = np.abs(pred - y) / np.maximum(y, 1e-12)
    extra = {"source": f"least-squares fit of {len(rows)} measured worker steps", "fit_rows": len(rows),
             "fit_r2": round(1.0 - ss_res / ss_tot, 6), "fit_median_rel_error": round(float(np.median(rel)), 6)}
    return CostModel(max(float(coef[0]), 1e-9), *(max(float(c), 0.0) for c in coef[1:]), name=name, extra=extra)


def rows_from_dicts(objs: Iterable[dict]) -> list[TimingRow]:
    """TimingRows from in-memory StepTiming-like dicts (total_ns target)."""
    return [TimingRow(int(o.get("num_prefill_tokens", 0)), int(o.get("num_decode_seqs", 0)),
                      int(o.get("num_kv_tokens_read", 0)), int(o["total_ns"]) / 1e9) for o in objs]


def fit_and_save(rows: Sequence[TimingRow], out: str | Path, name: str, source: str) -> CostModel:
    """Fits `rows`, records where they came from (`source`) in the model's extra, writes `out`."""
    model = fit(rows, name=name)
    model = CostModel(model.a_s, model.b_s_per_prefill_token, model.c_s_per_decode_seq, model.d_s_per_kv_token,
                      name=model.name, extra={**model.extra, "source": f"{source}; {model.extra['source']}"})
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
