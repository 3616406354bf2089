"""The iteration-time guard that bros and tempo share: how much work fits in the step being planned
before the tightest real-time deadline that the step can still meet.

- Cost model: `a + b·prefill + c·decode + d·kv` seconds, by default refit online from the worker's
  measured steps with the given (or built-in) coefficients as the prior (online_cost_model.py).
- Start: the step runs after the plans in flight. Each of those was priced by this guard when it
  was built, so `start = now + Σ predicted(plans in flight)`. (An average measured step times
  the number in flight, the earlier rule, assumed every plan in flight was average: behind a
  2,048-token prefill step the next step started later than planned in 29% of the steps of
  docs/scheduling.md's diagnosis, and its RT tokens came late.)
- Tightest deadline: `note(deadline, draft, pace)` keeps the earliest deadline of a token that the
  step samples for an on-time RT request, *if the step as built so far can still meet it*. A token
  that is already late cannot be saved by trimming other work; noting it shrank every later chunk
  to the minimum while RT was behind, and the work piled up (RT attainment 0.39 against the
  dedicated run's 0.96 in the diagnosis).
- Pace: for a stream's token it also keeps `start + tpot`: the step lasts at most one TPOT of the
  streams in it, so a stream never loses the slack it gained by starting early. Capping by the
  token's deadline alone let steps spend that slack on BE work until every stream ran at zero
  slack, where the smallest prediction error made tokens late (tight-TPOT cells of the suite:
  RT 0.38 against the dedicated run's 1.00). Both limits are equal once a stream has no slack.
- Error margin: every prediction is compared with the step's measured time when its result
  comes back; the guard plans with `step_time × (1 + m)`, `m` the 90th percentile of the relative
  under-estimates of the last 64 steps (0 when the model is exact). Packing steps to the
  predicted deadline exactly, a 1% error made a token ~1 ms late in 13% of the steps, and every
  such token loses its request's SLO.
- `fit(...)`: the most tokens of a chunk (or the one decode) whose addition keeps
  `start + (1 + m)·step_time(step) ≤ limit`.
"""

from __future__ import annotations

import math
import bisect
from collections import deque

from scheduler_svc.core.cost_model import CostModel, LinearCostModel
from scheduler_svc.core.online_cost_model import OnlineLinearCostModel, linear_prior
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.request import Request
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.work_ahead import WorkAhead

_FLOAT_SLACK_S = 1e-9  # a step that lands exactly on the deadline fits
_ERROR_WINDOW = 64  # steps whose prediction errors set the margin
_ERROR_QUANTILE = 0.9


def make_cost_model(cost_model: CostModel | None, cost_model_path: str | None,
                    online: bool) -> tuple[CostModel, OnlineLinearCostModel | None]:
    """The policy's cost model: the given one, else the coefficients file, else the built-in
    defaults; with `online`, those are only the prior of a model refit from measured steps."""
    if cost_model is None:
        cost_model = LinearCostModel.from_json_file(cost_model_path) if cost_model_path else LinearCostModel()
    if online and not isinstance(cost_model, OnlineLinearCostModel):
        cost_model = OnlineLinearCostModel(prior=linear_prior(cost_model))
    return cost_model, cost_model if isinstance(cost_model, OnlineLinearCostModel) else None


class StepGuard:
    """Prices the step being built; see the module docstring."""

    __slots__ = ("cost", "online", "start_s", "mean_step_s", "margin", "_ema", "_inflight", "_pending", "_errors",
                 "_sorted_errors")

    def __init__(self, cost: CostModel, online: OnlineLinearCostModel | None, step_time_ema: float = 0.2) -> None:
        if not 0 < step_time_ema <= 1:
            raise ValueError(f"step guard: 0 < step_time_ema <= 1 (got {step_time_ema})")
        self.cost = cost
        self.online = online
        self.start_s = 0.0
        self.mean_step_s = cost.step_time(0, 0, 0)  # measured step time (EMA), seeded by the model
        self.margin = 0.0  # relative safety margin on predictions (module doc)
        self._ema = step_time_ema
        self._inflight: deque[float] = deque(maxlen=8)  # predicted durations of the plans in flight, oldest first
        self._pending: StepDraft | None = None  # the last draft, not yet known to be sent
        self._errors: deque[float] = deque(maxlen=_ERROR_WINDOW)
        self._sorted_errors: list[float] = []

    def predict(self, draft: StepDraft) -> float:
        """Predicted duration of the step as `draft` stands."""
        return self.cost.step_time(draft.num_prefill_tokens, draft.num_decode_seqs, draft.num_kv_tokens)

    def _flush(self, sent: bool) -> None:
        """The pending draft was sent (a plan with scheduled work always is) or not."""
        prev, self._pending = self._pending, None
        if prev is not None and sent and prev.num_scheduled:
            self._inflight.append(self.predict(prev))  # its shape is final now

    def begin_step(self, draft: StepDraft) -> None:
        if self._pending is not None:
            self._flush(draft.step_id != self._pending.step_id)
        while len(self._inflight) > draft.num_steps_ahead:
            self._inflight.popleft()  # results that never came back (failed steps)
        missing = draft.num_steps_ahead - len(self._inflight)  # plans we did not price (none normally)
        ahead = sum(self._inflight) * (1.0 + self.margin)
        self.start_s = draft.now + ahead + max(0, missing) * self.mean_step_s
        self._pending = draft

    def observe(self, timing: StepTiming | None) -> None:
        """The result of the oldest plan in flight."""
        if self._pending is not None and self._pending.num_scheduled:
            self._flush(True)
        if timing is None or timing.total_ns <= 0:
            return
        seconds = timing.total_ns / 1e9
        self.mean_step_s += self._ema * (seconds - self.mean_step_s)
        if self._inflight:
            predicted = self._inflight.popleft()
            if predicted > 0:
                self._record_error(seconds / predicted - 1.0)
        if self.online is not None:
            self.online.observe(timing.num_prefill_tokens, timing.num_decode_seqs, timing.num_kv_tokens_read, seconds)

    def _record_error(self, error: float) -> None:
        errors, ordered = self._errors, self._sorted_errors
        if len(errors) == errors.maxlen:
            del ordered[bisect.bisect_left(ordered, errors[0])]
        errors.append(error)
        bisect.insort(ordered, error)
        self.margin = max(0.0, ordered[min(len(ordered) - 1, int(_ERROR_QUANTILE * len(ordered)))])

    def end_if_added(self, draft: StepDraft) -> float:
        """When the step would end as built so far (the plain prediction, no margin)."""
        return self.start_s + self.predict(draft)

    def note(self, deadline_s: float, draft: StepDraft, pace_s: float = math.inf, reserve_s: float = 0.0) -> bool:
        """Notes an RT token deadline if the step as built, with that token in it, meets it.
        For a stream, `pace_s` (its TPOT) and `reserve_s`: the step may spend the stream's slack
        down to `reserve_s`, and beyond that last at most `pace_s` (never past the deadline).
        Returns whether the deadline is still attainable."""
        if deadline_s + _FLOAT_SLACK_S < self.end_if_added(draft):
            return False
        draft.note_deadline(max(deadline_s - reserve_s, min(deadline_s, self.start_s + pace_s)))
        return True

    def fit(self, req: Request, num_tokens: int, is_decode: bool, draft: StepDraft, deadline_s: float) -> int:
        """Most tokens (≤ num_tokens) of `req` whose addition keeps the step within `deadline_s`."""
        if math.isinf(deadline_s):
            return num_tokens
        limit_s = (deadline_s - self.start_s) / (1.0 + self.margin) + _FLOAT_SLACK_S
        p, d, k, c = draft.num_prefill_tokens, draft.num_decode_seqs, draft.num_kv_tokens, req.num_computed_tokens
        step_time = self.cost.step_time
        if is_decode:
            return num_tokens if step_time(p, d + 1, k + c + 1) <= limit_s else 0
        lo, hi = 0, num_tokens  # invariant: lo fits; binary search on a non-decreasing cost
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if step_time(p + mid, d, k + c + mid) <= limit_s:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def forecast_s(self, work: WorkAhead) -> float:
        """Seconds from now until `work`'s prefill has run: after the plans in flight (each priced
        when it was built, the one being sent included), in steps that each carry every running
        stream's decode and fill the rest of the token budget with prefill (the last one with work
        ranked behind, as chunked prefill does), every prediction with
        the guard's error margin; with streams running, a step holds only the prefill that keeps
        it within their tightest TPOT (`work.step_time_cap_s`), as the guard's pace does."""
        pending = self._pending
        ahead = sum(self._inflight) + (self.predict(pending) if pending is not None and pending.num_scheduled else 0.0)
        step_time = self.cost.step_time
        d, k = work.decode_seqs, work.kv_tokens
        per_step = max(1, work.token_budget - work.decode_seqs)
        if not math.isinf(work.step_time_cap_s):  # the most prefill a step within the streams' TPOT holds
            limit_s = work.step_time_cap_s / (1.0 + self.margin)
            lo, hi = 1, per_step
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if step_time(mid, d, k) <= limit_s else (lo, mid - 1)
            per_step = lo
        full, rest = divmod(max(1, work.prefill_tokens), per_step)
        last = min(per_step, rest + work.prefill_behind) if rest else 0  # filled by work ranked behind
        steps = full * step_time(per_step, d, k) + (step_time(last, d, k) if last else 0.0)
        return (ahead + steps) * (1.0 + self.margin)

    def prefill_s(self, num_tokens: int) -> float:
        """Time to compute `num_tokens` of prefill in one step of its own (fixed cost included)."""
        return self.cost.step_time(num_tokens, 0, 0)
