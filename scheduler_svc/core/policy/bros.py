"""BROS (arXiv 2504.09590): real-time and best-effort requests on one engine.

What the paper's visible material fixes (papers.md §1) and how it is realised here:

- Decodes first (`decodes_first`, default on): every request with one token to compute (a stream
  of any class) ranks ahead of every prefill chunk: key `(phase, class, ...)`, phase 0 for decodes.
  A decode costs one token of the budget and ~20 µs, but with slack order a big RT prefill chunk
  used to take the whole budget and leave the streams behind it idle, holding seats and KV while
  producing nothing (~30 RT and ~10 BE streams per step at x1.9 in docs/scheduling.md). Decodes
  first raised BE throughput in the load window from 432 to 501 tok/s there, RT still 100%, and
  at x3 RT attainment 66% -> 74%. RT prefills stay ahead of BE prefills, and the cost-model guard
  still trims BE work to the tightest RT deadline in the step.
- Dynamic priority of RT requests by remaining slack to their next token deadline. Key of an RT
  request (within its phase): `(0, d − w)`, with `d` the deadline of its next token (`arrival + ttft` before the
  first token, `arrival + ttft + i·tpot` for token i) and `w` the cost model's time for the
  prefill it still has to compute. Ordering by `d − w` equals ordering by slack `d − now − w`
  (now is common), so waiting keys do not go stale. DEADLINE requests follow, earliest
  deadline first `(1, arrival + deadline)`, then BEST_EFFORT in arrival order `(2, arrival)`.
- An iteration-time cost model (`CostModel.step_time(prefill_tokens, decode_seqs, kv_tokens)`,
  linear `a + b·prefill + c·decode + d·kv`, coefficients from a JSON file or injected, and by
  default (`online_cost_model`) refit online from the worker's measured steps with those
  coefficients as the prior: core/online_cost_model.py) decides how much work fits before the tightest RT deadline in the step. The step starts after the plans
  already in flight: `start = now + steps_in_flight × measured step time (EMA)`. RT decodes are
  always taken (never stalled); an RT prefill chunk and all BE/DEADLINE work are trimmed to keep
  `start + step_time(step) ≤ tightest RT deadline`, so BE fills what remains of the token budget
  and of the time. An RT prefill always gets at least `min_prefill_chunk` tokens (progress when
  already late); with no RT in the step BE work is only bounded by the token budget.
- KV: RT blocks come from the low end of the pool, BE/DEADLINE from the high end (the ledger and
  store). A waiting RT request may take BE/DEADLINE blocks to be admitted (victims: lowest
  ranked first, i.e. the latest-arrived BE, nearest the boundary). The core takes victims only
  among requests ranked after the beneficiary, so with decodes first these are BE/DEADLINE
  requests still in prefill (those that hold the long prompts); a decoding BE stream keeps its
  blocks unless a running RT stream runs short; BE admissions leave
  `rt_reserve_blocks` free as headroom for RT arrivals. BE/DEADLINE victims are preempted by
  CHECKPOINT (their KV is saved to the KV store's host tier and restored on resume; see
  core/checkpoints.py), RT victims by recompute.
- Pacing (opt-in, `pace_rt_decodes`; `policy/pacing.py`): a stream ahead of its per-token pace
  skips a step that other work fills. Off by default: in the simulator (docs/scheduling.md) the
  stretched streams hold seats and KV longer, and RT attainment and BE throughput both dropped.
- BE is served only with what RT leaves, so aging (default 30 s; bound in `policy/base.py`) keeps
  BE from starving under sustained RT load; promoted requests always get at least
  `min_prefill_chunk` tokens.
"""

from __future__ import annotations

import math

from scheduler_svc.core.cost_model import CostModel, LinearCostModel
from scheduler_svc.core.online_cost_model import OnlineLinearCostModel, linear_prior
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.policy.base import Policy, PreemptionMode, TicketView
from scheduler_svc.core.policy.pacing import OtherWork, StepTimes, decode_may_yield
from scheduler_svc.core.request import Request, ServiceClass
from scheduler_svc.core.step_draft import StepDraft

_RT = ServiceClass.REAL_TIME


class BrosPolicy(Policy):
    name = "bros"
    running_key_ttl = 1

    def __init__(
        self,
        *,
        cost_model: CostModel | None = None,
        cost_model_path: str | None = None,
        aging_s: float | None = 30.0,
        rt_reserve_blocks: int = 0,
        min_prefill_chunk: int = 16,
        step_time_ema: float = 0.2,
        pace_rt_decodes: bool = False,
        pace_margin_s: float = 0.02,
        decodes_first: bool = True,
        online_cost_model: bool = True,
    ) -> None:
        super().__init__(aging_s=aging_s)
        if cost_model is None:
            cost_model = LinearCostModel.from_json_file(cost_model_path) if cost_model_path else LinearCostModel()
        # Online (default): the given or default coefficients are only the prior; the worker's
        # measured steps refine them (online_cost_model.py).
        self.online_cost: OnlineLinearCostModel | None = None
        if online_cost_model and not isinstance(cost_model, OnlineLinearCostModel):
            cost_model = OnlineLinearCostModel(prior=linear_prior(cost_model))
        if isinstance(cost_model, OnlineLinearCostModel):
            self.online_cost = cost_model
        if rt_reserve_blocks < 0 or min_prefill_chunk < 1 or not 0 < step_time_ema <= 1 or pace_margin_s < 0:
            raise ValueError("bros: rt_reserve_blocks >= 0, min_prefill_chunk >= 1, 0 < step_time_ema <= 1 "
                             "and pace_margin_s >= 0")
        self.cost = cost_model
        self.rt_reserve_blocks = rt_reserve_blocks
        self.min_prefill_chunk = min_prefill_chunk
        self.pace_rt_decodes = pace_rt_decodes
        self.pace_margin_s = pace_margin_s
        self.decodes_first = decodes_first
        self._base_s = cost_model.step_time(0, 0, 0)
        self.steps = StepTimes(self._base_s, step_time_ema)  # measured step times, seeded by the model
        self._start_s = 0.0
        self._other = OtherWork()

    # ---- ordering ------------------------------------------------------------------------------
    def key(self, req: Request, now: float) -> tuple:
        cls = req.service_class
        remaining_prefill = max(0, req.num_tokens - req.num_computed_tokens - 1)
        # Decodes first (module doc): phase 0 (one token to compute) before phase 1 (a prefill).
        phase = 1 if remaining_prefill or not self.decodes_first else 0
        if cls is _RT:
            # Prefill work net of the fixed per-step cost (the model may have been refit since).
            cost = self.cost.step_time
            work = cost(remaining_prefill, 0, 0) - cost(0, 0, 0) if remaining_prefill else 0.0
            return (phase, 0, req.next_token_deadline_s() - work, req.arrival_s)
        if cls is ServiceClass.DEADLINE:
            return (phase, 1, req.token_deadline_s(0), req.arrival_s)
        return (phase, 2, req.arrival_s, 0.0)

    # ---- the iteration-time guard --------------------------------------------------------------
    def begin_step(self, draft: StepDraft) -> None:
        self._start_s = draft.now + draft.num_steps_ahead * self.steps.mean_s
        self._other.begin_step()

    @property
    def step_time_s(self) -> float:
        """Measured step time (EMA)."""
        return self.steps.mean_s

    def limit_tokens(self, req: Request, num_tokens: int, is_decode: bool, draft: StepDraft,
                     ticket: TicketView) -> int:
        rt = req.service_class is _RT
        if rt and is_decode:
            # Just enough: a stream ahead of its per-token pace skips this step (pacing.py).
            if (self.pace_rt_decodes and self._other.may_yield and ticket.promoted_at is None
                    and decode_may_yield(req, self._start_s, self.steps.max_s, self.pace_margin_s)):
                return 0
            return num_tokens
        deadline = draft.tightest_deadline_s
        if rt:
            deadline = min(deadline, req.next_token_deadline_s())
        if math.isinf(deadline):
            return num_tokens
        fits = self._max_fit(req, num_tokens, is_decode, draft, deadline - self._start_s)
        if rt or ticket.promoted_at is not None:
            fits = max(fits, min(num_tokens, self.min_prefill_chunk))
        return fits

    def _max_fit(self, req: Request, num_tokens: int, is_decode: bool, draft: StepDraft, limit_s: float) -> int:
        """Most tokens (≤ num_tokens) of `req` whose addition keeps the step within `limit_s`."""
        p, d, k, c = draft.num_prefill_tokens, draft.num_decode_seqs, draft.num_kv_tokens, req.num_computed_tokens
        step_time = self.cost.step_time
        limit_s += 1e-9  # float slack: a step that lands exactly on the deadline fits
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

    def on_scheduled(self, req: Request, num_tokens: int, is_decode: bool, sample: bool, draft: StepDraft,
                     ticket: TicketView) -> None:
        if self.pace_rt_decodes:
            self._other.on_scheduled(req, ticket)
        if req.service_class is _RT:
            # The token this step samples (or, for a prefill chunk, the first token still due).
            index = req.num_scheduled_outputs - 1 if sample else req.num_scheduled_outputs
            draft.note_deadline(req.token_deadline_s(index))

    def observe_step(self, timing: StepTiming | None, now: float) -> None:
        if timing is not None and timing.total_ns > 0:
            self.steps.observe(timing.total_ns / 1e9)
            if self.online_cost is not None:
                self.online_cost.observe(timing.num_prefill_tokens, timing.num_decode_seqs,
                                         timing.num_kv_tokens_read, timing.total_ns / 1e9)

    # ---- KV ------------------------------------------------------------------------------------
    def admission_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        return beneficiary.service_class is _RT and victim.service_class is not _RT

    def kv_reserve(self, req: Request) -> int:
        return 0 if req.service_class is _RT else self.rt_reserve_blocks

    def preemption_mode(self, victim: Request) -> PreemptionMode:
        # Bidirectional KV: a BE/DEADLINE victim's KV goes to the host tier and comes back on
        # resume (the core recomputes instead when it runs without a checkpoint book).
        return PreemptionMode.RECOMPUTE if victim.service_class is _RT else PreemptionMode.CHECKPOINT
