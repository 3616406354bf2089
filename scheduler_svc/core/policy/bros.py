"""BROS (arXiv 2504.09590): real-time and best-effort requests on one engine.

What the paper's visible material fixes (papers.md §1) and how it is realised here:

- Who can still make it (`policy/slo_watch.py`): an RT request is *on time* until a token of it
  came late, its next token is already due, or (before its first token) even an immediate prefill
  would miss its TTFT; a deadline request until its deadline (minus its prefill) has passed.
  Attainment is all or nothing per request, so *lost* requests rank after every request that can
  still make it: serving the late ones first is how an overloaded step turns a few misses into
  all misses (the diagnosis in docs/scheduling.md).
- Order (key `(phase, group, ...)`, smaller first):
  phase: decodes first (`decodes_first`, default on): every request with one token to compute
  ranks ahead of every prefill chunk. A decode costs one budget token and ~20 µs; in slack order
  a big RT prefill chunk used to take the whole budget and leave streams idle, holding seats
  and KV while producing nothing.
  group 0, on time: RT and deadline requests by slack, `d − w` with `d` the deadline of the next
  token (`arrival + ttft + i·tpot`; a deadline request's `arrival + deadline`) and `w` the cost
  model's time for the prefill it still has to compute (`d − w` orders as slack `d − now − w`).
  RT first tokens are usually the nearest deadlines; a deadline request near its deadline goes
  ahead of an RT prefill with more slack, as EDF would (its output length is unknown, so its
  slack is overstated: RT keeps the benefit of the doubt).
  group 1, aged: not scheduled for `aging_s` (default 30 s) while not on time or best-effort;
  oldest first. group 2: lost RT, group 3: lost deadline requests, group 4: best-effort (arrival
  order).
- An iteration-time cost model (`policy/step_guard.py`: linear, refit online from the worker's
  measured steps with the given or built-in coefficients as the prior, with a margin learnt from
  its own recent errors) fits work before the tightest RT deadline the step can still meet, and
  within the TPOT of the streams in it once they are down to `stream_reserve_tpots` TPOTs of
  slack (and, opt-in, `slack_bank_tpots`: a stream's slack bank, `slo_step.py`; off by
  default). The step starts after the plans in flight, each priced when it was built.
  On-time RT decodes are always taken; every other chunk (RT prefill, deadline, aged, lost, BE) is trimmed
  to fit, so BE fills what remains of the token budget and of the time (`policy/slo_step.py`, the
  rules shared with tempo: the first on-time RT or aged chunk of a step that does not fit still
  gets `min_prefill_chunk` tokens; below on-time work one prompt at a time, and only a prompt the
  free KV holds). With no on-time RT token in the step, work is only bounded by the token budget.
- KV: RT blocks come from the low end of the pool, others from the high end (ledger and store).
  A waiting on-time RT request takes blocks of lower-ranked non-RT requests only when it must:
  when its TTFT slack (deadline − start − its prefill) is under `preempt_horizon_steps` measured
  steps, the last moment at which freeing blocks still saves it (before that, blocks freed by
  finishing requests serve it, and admission stays closed behind it). Never a victim re-admitted
  less than `victim_hold_s` ago (a restored victim preempted again wastes its restore and thrashes),
  nor an aged one. Victims are preempted by CHECKPOINT (their KV goes to the KV store's host tier
  and is restored on resume; core/checkpoints.py); RT victims (of a running RT stream short of KV)
  by recompute. A running on-time RT stream short of KV likewise waits for free blocks while its
  next token keeps `preempt_horizon_steps` steps of slack and a step is in flight
  (`slo_step.growth_may_wait`). BE admissions leave `rt_reserve_blocks` free as headroom.
- Seats (opt-in, `take_seats`; `slo_step.may_take_seat_of`): at `max_num_seqs` a waiting on-time
  RT request takes the seat of best-effort work or a lost deadline request: not aged, not
  re-admitted within `victim_hold_s`, whose KV is no larger than the RT prompt and whose
  checkpoint fits the host tier without evicting another (the step builder picks the fewest
  blocks; one seat per waiting RT request). Near saturation the seats, not the token budget,
  were what RT lacked in the simulator (docs/scheduling.md, phases F and G: +1 to +2 RT cells per
  seed, no recompute); off by default because live on the CPU stack at x8 it cut best-effort
  throughput 2-3x (bros `rt_be_short` x8: 82.1 -> 36.1 tok/s) without an RT gain, which the
  simulator does not predict.
- Anti-starvation bound (the core's promotion is off: `aging_s` is this policy's own): a
  non-RT request, or a lost RT one, unscheduled for `aging_s` is aged from the next key
  refresh (running keys every step, waiting keys every `waiting_key_ttl` = 20 steps), and from
  then on ranks ahead of every request but on-time RT and deadline work; the first aged chunk of
  a step that the guard would trim still gets `min_prefill_chunk` tokens unless an on-time RT
  prompt took that slot. So it is scheduled again within `aging_s` + 20 steps + one step, unless
  on-time work or requests aged earlier fill the step's token budget or time, its `max_num_seqs`
  seats or the KV pool (an aged request never preempts; it is admitted as seats and blocks free
  up). It never ranks above an RT request that is still on time.
- Pacing (opt-in, `pace_rt_decodes`; `policy/pacing.py`): a stream ahead of its per-token pace
  skips a step that other work fills. Off by default: in the simulator the stretched streams hold
  seats and KV longer, and RT attainment and BE throughput both dropped.
"""

from __future__ import annotations

from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.cost_model import CostModel
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.policy.base import Policy, PreemptionMode, TicketView
from scheduler_svc.core.policy.pacing import OtherWork, StepTimes, decode_may_yield
from scheduler_svc.core.policy.slo_step import SloStep, growth_may_wait, may_take_seat_of, on_time
from scheduler_svc.core.policy.slo_watch import SloWatch, is_aged, is_lost
from scheduler_svc.core.policy.step_guard import StepGuard, make_cost_model
from scheduler_svc.core.request import Request, ServiceClass
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.work_ahead import WorkAhead

_RT = ServiceClass.REAL_TIME
_DL = ServiceClass.DEADLINE
_ON_TIME, _AGED, _LOST_RT, _LOST_DL, _BE = range(5)  # the groups of the module docstring


class BrosPolicy(Policy):
    name = "bros"
    running_key_ttl = 1
    # Waiting keys worsen with time (a request becomes lost) and are refreshed lazily at the top
    # of the queue; aging is the one improvement, picked up by the full re-key every 20 steps.
    waiting_keys_only_worsen = True
    waiting_key_ttl = 20

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
        preempt_horizon_steps: float = 2.0,
        victim_hold_s: float = 1.0,
        stream_reserve_tpots: float = 1.0,
        slack_bank_tpots: float = 0.0,
        bank_fill_pace: float = 0.5,
        take_seats: bool = False,
    ) -> None:
        # The core's promotion would rank a starved BE request above on-time RT: aging is ours.
        super().__init__(aging_s=None)
        if aging_s is not None and not aging_s > 0:
            raise ValueError(f"aging_s must be > 0 seconds or None (got {aging_s})")
        if rt_reserve_blocks < 0 or pace_margin_s < 0 or preempt_horizon_steps < 0 or victim_hold_s < 0:
            raise ValueError("bros: rt_reserve_blocks, pace_margin_s, preempt_horizon_steps and victim_hold_s "
                             "must be >= 0")
        self.starvation_s = aging_s
        cost, self.online_cost = make_cost_model(cost_model, cost_model_path, online_cost_model)
        self.cost = cost
        self.guard = StepGuard(cost, self.online_cost, step_time_ema)
        # Deadline work ranks among RT prompts by slack here: the bank, if on, spares it (slo_step.py).
        self.step = SloStep(self.guard, min_prefill_chunk, stream_reserve_tpots, slack_bank_tpots, bank_fill_pace,
                            bank_spares_deadline_work=True)
        self.rt_reserve_blocks = rt_reserve_blocks
        self.pace_rt_decodes = pace_rt_decodes
        self.pace_margin_s = pace_margin_s
        self.decodes_first = decodes_first
        self.preempt_horizon_steps = preempt_horizon_steps
        self.victim_hold_s = victim_hold_s
        self.steps = StepTimes(cost.step_time(0, 0, 0), step_time_ema)  # for pacing: mean and recent max
        self._other = OtherWork()
        self._now = 0.0
        self.take_seats = take_seats

    # ---- ordering ------------------------------------------------------------------------------
    @staticmethod
    def _watch(req: Request) -> SloWatch:
        state = req.policy_state
        if not isinstance(state, SloWatch):
            state = req.policy_state = SloWatch()
        return state

    def _prefill_w(self, remaining_prefill: int) -> float:
        """Cost-model time of a prefill, net of the fixed per-step cost (the model may be refit)."""
        if not remaining_prefill:
            return 0.0
        cost = self.cost.step_time
        return cost(remaining_prefill, 0, 0) - cost(0, 0, 0)

    def _group(self, req: Request, now: float, remaining_prefill: int) -> int:
        watch = self._watch(req)
        cls = req.service_class
        if cls is not ServiceClass.BEST_EFFORT:
            # The prefill's marginal time is a lower bound of when it can end: lost only for sure.
            if not is_lost(req, watch, now, self._prefill_w(remaining_prefill + 1)):
                return _ON_TIME
        if is_aged(req, watch, now, self.starvation_s):
            return _AGED
        return _LOST_RT if cls is _RT else _LOST_DL if cls is _DL else _BE

    def key(self, req: Request, now: float) -> tuple:
        remaining_prefill = max(0, req.num_tokens - req.num_computed_tokens - 1)
        phase = 1 if remaining_prefill or not self.decodes_first else 0
        group = self._group(req, now, remaining_prefill)
        if group == _ON_TIME:
            return (phase, group, req.next_token_deadline_s() - self._prefill_w(remaining_prefill), req.arrival_s)
        if group == _AGED:
            return (phase, group, self._watch(req).last_progress_s, req.arrival_s)
        return (phase, group, req.arrival_s, 0.0)

    def on_time(self, req: Request) -> bool:
        """Whether `req` is RT or deadline work that can still meet its SLO (as last ranked)."""
        return on_time(req, self._watch(req))

    # ---- the iteration-time guard (policy/step_guard.py, policy/slo_step.py) ----------------------
    def begin_step(self, draft: StepDraft) -> None:
        self.step.begin_step(draft)
        self._now = draft.now
        self._other.begin_step()

    @property
    def step_time_s(self) -> float:
        """Measured step time (EMA)."""
        return self.guard.mean_step_s

    def limit_tokens(self, req: Request, num_tokens: int, is_decode: bool, draft: StepDraft,
                     ticket: TicketView) -> int:
        watch = self._watch(req)
        if (is_decode and self.pace_rt_decodes and req.service_class is _RT and self._other.may_yield
                and ticket.promoted_at is None
                and decode_may_yield(req, self.guard.start_s, self.steps.max_s, self.pace_margin_s)):
            return 0  # just enough: a stream ahead of its per-token pace skips this step (pacing.py)
        return self.step.limit(req, watch, num_tokens, is_decode, draft, watch.aged or ticket.promoted_at is not None)

    def on_scheduled(self, req: Request, num_tokens: int, is_decode: bool, sample: bool, draft: StepDraft,
                     ticket: TicketView) -> None:
        if self.pace_rt_decodes:
            self._other.on_scheduled(req, ticket)
        self.step.on_scheduled(req, self._watch(req), is_decode, sample, draft)

    def observe_step(self, timing: StepTiming | None, now: float) -> None:
        self.guard.observe(timing)
        if timing is not None and timing.total_ns > 0:
            self.steps.observe(timing.total_ns / 1e9)

    # ---- KV ------------------------------------------------------------------------------------
    def admission_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        if beneficiary.service_class is not _RT or victim.service_class is _RT or not self.on_time(beneficiary):
            return False
        victim_watch = self._watch(victim)
        if victim_watch.aged or self._now - victim_watch.admitted_at < self.victim_hold_s:
            return False
        # Only when waiting longer for free blocks would cost it its first token.
        remaining = max(0, beneficiary.num_tokens - beneficiary.num_computed_tokens)
        slack = beneficiary.next_token_deadline_s() - self.guard.start_s - self.guard.prefill_s(remaining)
        return slack < self.preempt_horizon_steps * self.guard.mean_step_s

    def growth_may_wait(self, beneficiary: Request) -> bool:
        return growth_may_wait(beneficiary, self._watch(beneficiary), self.guard, self.preempt_horizon_steps)

    def kv_reserve(self, req: Request) -> int:
        reserve = self.step.kv_reserve(req, self._watch(req))  # whole prompts below on-time work
        return reserve if req.service_class is _RT else reserve + self.rt_reserve_blocks

    def may_take_seats(self, beneficiary: Request) -> bool:
        return self.take_seats and beneficiary.service_class is _RT and self.on_time(beneficiary)

    def seat_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        return may_take_seat_of(beneficiary, victim, self._watch(victim), self._now, self.victim_hold_s)

    def forecast_first_token_s(self, work: WorkAhead) -> float | None:
        return self.guard.forecast_s(work)

    def bind(self, config: SchedulerConfig) -> None:
        self.step.bind(config)

    def preemption_mode(self, victim: Request) -> PreemptionMode:
        # Bidirectional KV: a BE/DEADLINE victim's KV goes to the host tier and comes back on
        # resume (the core recomputes instead when it runs without a checkpoint book).
        return PreemptionMode.RECOMPUTE if victim.service_class is _RT else PreemptionMode.CHECKPOINT
