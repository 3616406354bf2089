"""The step-time model and its fit, shared by the worker (which calibrates itself at start), the
scheduler (which starts its online model from what the worker reported) and the simulator's
calibration tools: `a + b·prefill_tokens + c·decode_seqs + d·kv_tokens_read` seconds.

The fit is ordinary least squares with non-negative coefficients (an active set: the most
negative slope is pinned to 0 and the rest refitted), so noise cannot yield a model that predicts
cheaper steps for more work. Columns are scaled to their largest value before the normal
equations are solved (kv tokens reach 1e5 while the constant is 1). Pure and stdlib only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_N = 4  # intercept, per prefill token, per decode sequence, per kv token read


@dataclass(frozen=True)
class StepCost:
    """Coefficients of the linear step-time model, seconds."""

    a_s: float
    b_s_per_prefill_token: float
    c_s_per_decode_seq: float
    d_s_per_kv_token: float

    def step_time(self, prefill_tokens: int, decode_seqs: int, kv_tokens_read: int) -> float:
        return (self.a_s + self.b_s_per_prefill_token * prefill_tokens + self.c_s_per_decode_seq * decode_seqs
                + self.d_s_per_kv_token * kv_tokens_read)


@dataclass(frozen=True)
class StepSample:
    """One measured step: its sizes and its wall time in seconds."""

    prefill_tokens: int
    decode_seqs: int
    kv_tokens_read: int
    seconds: float


@dataclass(frozen=True)
class StepCostFit:
    """A fitted model and how well it fits its samples."""

    cost: StepCost
    num_samples: int
    r2: float
    median_rel_error: float


def fit_step_cost(samples: Sequence[StepSample]) -> StepCostFit:
    """Non-negative least-squares fit; ValueError with fewer than 4 samples."""
    if len(samples) < _N:
        raise ValueError(f"need at least {_N} timing rows to fit {_N} coefficients, got {len(samples)}")
    x = [(1.0, float(s.prefill_tokens), float(s.decode_seqs), float(s.kv_tokens_read)) for s in samples]
    y = [s.seconds for s in samples]
    scale = [max(max(abs(row[j]) for row in x), 1e-12) for j in range(_N)]
    xs = [[row[j] / scale[j] for j in range(_N)] for row in x]
    # A feature that is zero in every sample says nothing about its coefficient: 0.
    active = [j for j in range(_N) if j == 0 or any(row[j] for row in x)]
    coef = [0.0] * _N
    while active:
        sol = _least_squares(xs, y, active)
        if sol is None:  # two features always proportional: keep the first of them
            active.pop()
            continue
        coef = [0.0] * _N
        for j, v in zip(active, sol):
            coef[j] = v
        negative = [j for j in active if coef[j] < 0 and j != 0]
        if not negative:
            break
        active.remove(min(negative, key=lambda j: coef[j]))
    theta = [c / s for c, s in zip(coef, scale)]
    pred = [sum(t * v for t, v in zip(theta, row)) for row in x]
    mean = sum(y) / len(y)
    ss_res = sum((a - b) ** 2 for a, b in zip(y, pred))
    ss_tot = sum((a - mean) ** 2 for a in y) or 1e-30
    rel = sorted(abs(p - a) / max(a, 1e-12) for p, a in zip(pred, y))
    cost = StepCost(max(theta[0], 1e-9), *(max(t, 0.0) for t in theta[1:]))
    return StepCostFit(cost, len(samples), 1.0 - ss_res / ss_tot, _median(rel))


def _least_squares(x: Sequence[Sequence[float]], y: Sequence[float], cols: Sequence[int]) -> list[float] | None:
    """Solves the normal equations of `y ≈ x[:, cols] θ`; None when they are singular."""
    mat = [[sum(row[i] * row[j] for row in x) for j in cols] for i in cols]
    rhs = [sum(row[i] * v for row, v in zip(x, y)) for i in cols]
    return _solve(mat, rhs)


def _solve(mat: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting on a small dense system; None if singular (a
    pivot under 1e-12 of the largest diagonal entry)."""
    size = len(rhs)
    tiny = 1e-12 * max((abs(mat[i][i]) for i in range(size)), default=0.0)
    a = [row[:] + [rhs[i]] for i, row in enumerate(mat)]
    for col in range(size):
        piv = max(range(col, size), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) <= tiny:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(col + 1, size):
            f = a[r][col] / a[col][col]
            if f:
                for c in range(col, size + 1):
                    a[r][c] -= f * a[col][c]
    out = [0.0] * size
    for r in range(size - 1, -1, -1):
        out[r] = (a[r][size] - sum(a[r][c] * out[c] for c in range(r + 1, size))) / a[r][r]
    return out


def _median(values: Sequence[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
