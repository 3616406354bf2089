"""Iteration-time cost models: how long a step of a given shape runs (BROS's batch guard).

Any object with `step_time(prefill_tokens, decode_seqs, kv_tokens_read) -> seconds` works (the
simulator's calibrated `CostModel` does); `LinearCostModel` is the core's own, read from the same
JSON coefficients file (`a_s`, `b_s_per_prefill_token`, `c_s_per_decode_seq`, `d_s_per_kv_token`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class CostModel(Protocol):
    def step_time(self, prefill_tokens: int, decode_seqs: int, kv_tokens_read: int) -> float:
        """Predicted wall time of one step, seconds; non-decreasing in every argument."""
        ...


@dataclass(frozen=True, slots=True)
class LinearCostModel:
    """`a + b·prefill_tokens + c·decode_seqs + d·kv_tokens_read` seconds. The defaults are a rough
    small-model GPU step (5 ms fixed, 0.05 ms per prefill token, 0.1 ms per decode sequence)."""

    a_s: float = 5e-3
    b_s_per_prefill_token: float = 5e-5
    c_s_per_decode_seq: float = 1e-4
    d_s_per_kv_token: float = 5e-8

    def __post_init__(self) -> None:
        coefficients = (self.a_s, self.b_s_per_prefill_token, self.c_s_per_decode_seq, self.d_s_per_kv_token)
        if min(coefficients) < 0:
            raise ValueError(f"cost model coefficients must be >= 0 (got {coefficients})")

    def step_time(self, prefill_tokens: int, decode_seqs: int, kv_tokens_read: int) -> float:
        return (self.a_s + self.b_s_per_prefill_token * prefill_tokens + self.c_s_per_decode_seq * decode_seqs
                + self.d_s_per_kv_token * kv_tokens_read)

    @staticmethod
    def from_json_file(path: str | Path) -> LinearCostModel:
        """Reads a coefficients file (the simulator's calibration output or a hand-written profile)."""
        raw = json.loads(Path(path).read_text())
        keys = ("a_s", "b_s_per_prefill_token", "c_s_per_decode_seq", "d_s_per_kv_token")
        missing = [k for k in keys if k not in raw]
        if missing:
            raise ValueError(f"cost model file {path} lacks {missing}")
        return LinearCostModel(*(float(raw[k]) for k in keys))
