"""An iteration-time cost model learnt online from the worker's own step timings.

`OnlineLinearCostModel` predicts `a + b·prefill_tokens + c·decode_seqs + d·kv_tokens_read` seconds
like `LinearCostModel`, but refits the four coefficients from a sliding window of the most recent
measured steps (`observe(prefill, decode, kv, seconds)`; bros feeds it `StepTiming.total_ns`, what a
step really costs the scheduler's clock). A built-in default is tuned for no machine in particular,
so learning the real one is what lets bros fit work before RT deadlines on the hardware it runs on.

Fit (every `refit_every` observations, on the whole window; stdlib only):

- Ridge regression toward the prior: minimise `Σ (y − x·θ)² + λ Σ s_j² (θ_j − θ0_j)²` where `s_j²`
  is the mean square of feature j over the window, so the prior counts as `prior_weight` extra
  observations in every direction whatever the feature's units (kv tokens run to 10⁵, the
  intercept is 1). The default, a tenth of an observation, barely biases what the window does
  identify (4 observations pulled a correlated slope a third of the way back). A direction the window does not excite (a feature that is always zero, or two
  features always proportional) stays at, or is split as in, the prior instead of swinging wildly.
- A feature that is zero over the whole window keeps its prior coefficient exactly.
- Non-negative: an active set; the most negative coefficient is pinned at 0 and the rest refit,
  at most four times (4×4 systems). The predicted step time stays non-decreasing in every argument,
  which bros's binary search (`_max_fit`) relies on.

Per observation the work is a deque append; a refit is O(window × 16) flops plus a 4×4 solve,
about 0.3 ms in CPython at the default window of 256, once every 16 steps. `step_time` reads four
floats. Not thread-safe: the scheduler core is single-threaded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from scheduler_svc.core.cost_model import CostModel, LinearCostModel

_N = 4  # coefficients: intercept, per prefill token, per decode sequence, per kv token read


def linear_prior(cost: CostModel | None) -> LinearCostModel:
    """The linear coefficients of `cost` (anything with `a_s`, `b_s_per_prefill_token`,
    `c_s_per_decode_seq`, `d_s_per_kv_token`, e.g. the simulator's calibrated model), or the
    built-in defaults for None. Raises ValueError for a model without those four attributes."""
    if cost is None:
        return LinearCostModel()
    if isinstance(cost, LinearCostModel):
        return cost
    names = ("a_s", "b_s_per_prefill_token", "c_s_per_decode_seq", "d_s_per_kv_token")
    if not all(hasattr(cost, n) for n in names):
        raise ValueError(f"an online cost model needs a linear prior with {names}; got {type(cost).__name__} "
                         "(bros: pass online_cost_model=False to use it as is)")
    return LinearCostModel(*(float(getattr(cost, n)) for n in names))


@dataclass(slots=True)
class OnlineLinearCostModel:
    """A `CostModel` whose linear coefficients are refit from recent measured steps.

    `prior`: starting coefficients and the values unidentifiable directions shrink to.
    `window`: observations kept (oldest dropped first). `refit_every`: observations between refits.
    `min_observations`: none before this many (the prior is used until then).
    `prior_weight`: how many observations' worth the prior counts for in every direction.
    """

    prior: LinearCostModel = field(default_factory=LinearCostModel)
    window: int = 256
    refit_every: int = 16
    min_observations: int = 8
    prior_weight: float = 0.1
    a_s: float = field(init=False)
    b_s_per_prefill_token: float = field(init=False)
    c_s_per_decode_seq: float = field(init=False)
    d_s_per_kv_token: float = field(init=False)
    num_observed: int = field(init=False, default=0)
    num_fits: int = field(init=False, default=0)
    _rows: deque = field(init=False, repr=False)
    _since_fit: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if self.window < _N or self.refit_every < 1 or self.min_observations < 1 or self.prior_weight <= 0:
            raise ValueError(f"online cost model: window >= {_N}, refit_every >= 1, min_observations >= 1 "
                             f"and prior_weight > 0 (got {self.window}, {self.refit_every}, "
                             f"{self.min_observations}, {self.prior_weight})")
        self._rows = deque(maxlen=self.window)
        self._set(self._prior_vector())

    # ---- CostModel -------------------------------------------------------------------------------
    def step_time(self, prefill_tokens: int, decode_seqs: int, kv_tokens_read: int) -> float:
        return (self.a_s + self.b_s_per_prefill_token * prefill_tokens + self.c_s_per_decode_seq * decode_seqs
                + self.d_s_per_kv_token * kv_tokens_read)

    @property
    def current(self) -> LinearCostModel:
        """The coefficients in use now, as an immutable `LinearCostModel`."""
        return LinearCostModel(self.a_s, self.b_s_per_prefill_token, self.c_s_per_decode_seq, self.d_s_per_kv_token)

    # ---- learning --------------------------------------------------------------------------------
    def observe(self, prefill_tokens: int, decode_seqs: int, kv_tokens_read: int, seconds: float) -> bool:
        """Records one measured step; refits when due. Returns True when the coefficients were refit.
        Steps with no work or a non-positive/non-finite time carry no information and are ignored."""
        if not seconds > 0 or seconds == float("inf") or (prefill_tokens <= 0 and decode_seqs <= 0):
            return False
        self._rows.append((1.0, float(prefill_tokens), float(decode_seqs), float(kv_tokens_read), float(seconds)))
        self.num_observed += 1
        self._since_fit += 1
        if len(self._rows) < self.min_observations or self._since_fit < self.refit_every and self.num_fits:
            return False
        self._since_fit = 0
        self._set(self._fit())
        self.num_fits += 1
        return True

    def _prior_vector(self) -> list[float]:
        p = self.prior
        return [p.a_s, p.b_s_per_prefill_token, p.c_s_per_decode_seq, p.d_s_per_kv_token]

    def _set(self, theta: list[float]) -> None:
        self.a_s, self.b_s_per_prefill_token, self.c_s_per_decode_seq, self.d_s_per_kv_token = theta

    def _fit(self) -> list[float]:
        prior = self._prior_vector()
        n = len(self._rows)
        xtx = [[0.0] * _N for _ in range(_N)]
        xty = [0.0] * _N
        for row in self._rows:
            y = row[_N]
            for i in range(_N):
                xi = row[i]
                if xi == 0.0:
                    continue
                xty[i] += xi * y
                xtx_i = xtx[i]
                for j in range(i, _N):
                    xtx_i[j] += xi * row[j]
        for i in range(_N):
            for j in range(i):
                xtx[i][j] = xtx[j][i]
        # Ridge toward the prior in units of each feature's mean square (module doc).
        lam = [self.prior_weight * xtx[i][i] / n for i in range(_N)]
        free = [i for i in range(_N) if xtx[i][i] > 0.0]  # unexcited features keep the prior exactly
        theta = list(prior)
        fixed_zero: set[int] = set()
        for _ in range(_N):
            active = [i for i in free if i not in fixed_zero]
            if not active:
                break
            # Move the pinned coefficients' contribution to the right-hand side.
            pinned = [j for j in range(_N) if j not in active]
            mat = [[xtx[i][j] + (lam[i] if i == j else 0.0) for j in active] for i in active]
            rhs = [xty[i] + lam[i] * prior[i] - sum(xtx[i][j] * theta[j] for j in pinned) for i in active]
            # Equilibrate (features differ by ~10⁵ in scale) so elimination stays accurate.
            scale = [mat[k][k] ** 0.5 for k in range(len(active))]
            mat = [[v / (scale[r] * scale[c]) for c, v in enumerate(row)] for r, row in enumerate(mat)]
            sol = _solve(mat, [v / scale[r] for r, v in enumerate(rhs)])
            if sol is None:
                return [self.a_s, self.b_s_per_prefill_token, self.c_s_per_decode_seq, self.d_s_per_kv_token]
            for k, (i, v) in enumerate(zip(active, sol)):
                theta[i] = v / scale[k]
            worst = min(active, key=lambda i: theta[i])
            if theta[worst] >= 0.0:
                break
            theta[worst] = 0.0
            fixed_zero.add(worst)
        return [max(0.0, v) for v in theta]


def _solve(mat: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting on a small dense system; None if singular."""
    size = len(rhs)
    a = [row[:] + [rhs[i]] for i, row in enumerate(mat)]
    for col in range(size):
        piv = max(range(col, size), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) < 1e-300:
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
