"""Tempo (arXiv 2504.20068, "JITServe" in v3): serve each request *just enough* to earn its
service gain, highest gain per unit of GPU time first (papers.md §2.3–2.7).

Service gain, with `r(x, y) = clamp(x / y, 1e-6, 1)`, penalty exponent `p` (default 100, the
value of the Tempo/JITServe artifact's benchmark scripts, papers.md §2.3: a near step function,
on time earns full credit and late earns ≈ nothing, e.g. 5% late keeps 0.6%; p = 2, the Tempo-era
value, let late work keep most of its credit), decode weight `w_d = 8`, prefill weight 1, all
times in seconds after arrival. `scheduler_svc/sim/service_gain.py` reports exactly this formula,
with the same p, for every policy:

- real-time: the prompt earns `in · r(ttft_slo, ttft)^p` once the first token is out; token i
  earns `w_d` if delivered by `ttft_slo + i·tpot_slo`, else `w_d · r(due_i, t_i)^p`;
- deadline: `(in + w_d · out) · r(deadline, finish)^p`;
- a workflow member: as a deadline request whose deadline is its stage's share of the
  workflow's end-to-end deadline (`WorkflowTracker`, graph matching);
- best-effort: `best_effort_weight · (in + w_d · out)` (no deadline: the factor is 1).

Urgency band (the per-token deadlines of streams, ahead of density). A real-time stream (it has
output tokens) ranks in band 0 by the deadline of its next token, earliest first, as does an RT
request still in its prompt whose first token can still be on time (`policy/slo_watch.py`: not
*lost*), and a deadline request (workflow calls included) not lost whose median remaining
length, learnt from its own tenant, still fits before its deadline, by its latest start
(`deadline − unit_time · (median remaining + prefill)`; with nothing learnt for its tenant yet it
gets the benefit of the doubt, as under EDF, unless the other tenants' median says it cannot
finish in time: `TempoPricing.latest_start`; a request that only those borrowed lengths doubt,
and that could still finish if short, ranks ahead of density work, beside aged work, until its
tenant has lengths of its own: `TempoPricing.unpriced_but_feasible`). Everything else, including an RT prompt that can
no longer make its TTFT (its SLO is lost; what it can still earn is its catch-up stream, which
density prices), ranks in band 1 by density. Why: with density alone a short deadline/BE prefill could outrank a streaming decode,
take the step's token budget and skip it (misses at tokens 150–300 of long outputs), and a late
RT request's reward collapsed so it sank until aging. A decode is one token, so band 0 costs
the density ranking little budget; a stream's band-0 key is fixed between its tokens.

Just enough, enforced by the step guard shared with bros (`policy/step_guard.py`,
`policy/slo_step.py`): an iteration-time cost model, refit online from the worker's measured
steps (the given or built-in coefficients are the prior), fits every chunk but on-time RT
decodes before the tightest RT deadline the step can still meet, and within the TPOT of the
streams in it (and, opt-in, `slack_bank_tpots`: a stream's slack bank, slo_step.py; off by
default). Without the guard, density
filled each 2,048-token step (~90 ms on the H100 profile) and every stream of an 80 ms-TPOT tier fell behind (the suite's tight cells: RT 0.13 against the
dedicated run's 0.96).

Priority in band 1 = service gain density (§2.5): `reward / remain_time`, key `(1, −density, remain_time)`,
where `remain_time = unit_time · (remain_len + prefill_left / prefill_tokens_per_step)`,
`unit_time` is the measured step time (EMA over step results, seeded with `unit_time_s`),
`remain_len = bound − produced`, and the reward is the gain the request earns from now on if
served at that pace plus what it has already earned:

- RT not started: `in·r(ttft, serve + unit)^p + w_d·L·r(ttft + tpot·L, serve + remain_time)^p`;
- RT streaming: `gain_so_far + w_d·remain_len·r(ttft + tpot·L, serve + remain_time)^p`;
- deadline / workflow member: `(in + w_d·L)·P(on time)`, `P(on time)` the fraction of the
  learnt output lengths (above what it has produced) short enough to finish by the (stage)
  deadline at the measured pace: `(deadline − serve − prefill time) / unit_time` tokens. With
  p = 100 the gain factor `r(deadline, finish)^p` is a step (on time or not), so its expectation
  is that probability; pricing it at the p95 bound `L` instead made any deadline request whose
  *bound* missed worth ≈ 0, and it sank below best-effort work though most of them were short
  enough (the suite's deadline attainment: 0.00–0.32 against edf's 0.84–0.98). At a cold start
  (no lengths learnt) `r(deadline, serve + remain_time)^p` at the bound is used;

with `L` the request's output-length upper bound (`lengths`, by default `OnlineLengths` over
`LengthPredictor`: online per-(tenant, prompt bucket) quantiles of finished requests;
`max_tokens` until enough have finished; raised when a request outgrows it). The true output
length is never read (core/output_lengths.py; only the simulator's target-4 oracle knows it).
The pricing is `policy/tempo_reward.py`. Members of one workflow share one
key: `(1, −Σ member rewards / max member remain_time, ·)` (siblings rise and fall together).

Keys of running requests are refreshed every 10 steps (the artifact recomputes every
`schedule_interval` iterations). A waiting request's density only decays while it waits (its
bound is fixed, its deadline factor shrinks), so waiting keys are refreshed lazily at the top of
the queue (`waiting_keys_only_worsen`, at most 32 per step), plus a full re-key every 50
steps (workflow keys can improve when a long sibling finishes, and aging promotes). The full
re-key costs O(waiting) once per 50 steps (~40 ms at 10,000 waiting on a slow CPU).

Anti-starvation (the core's promotion is off; `aging_s`, default 60 s, is this policy's own):
density favours short and urgent work, so a request outside band 0 that has not been scheduled
for `aging_s` is aged (sticky) from its next key refresh (running keys within 10 steps, waiting
ones within 50) and ranks `(1, −inf, last scheduled)`: ahead of all density-ranked work, behind
band 0, never above an RT request that can still be on time. The first aged chunk of a step that
the guard would trim gets at least `min_prefill_chunk` tokens unless an on-time RT prompt took
that slot. So it is scheduled again within `aging_s` + 50 steps + one step, unless band-0 work
or requests aged earlier fill the step's token budget or time, its seats or the KV pool (an aged
request never preempts; it is admitted as seats and blocks free up).

KV: preemption only on KV shortage (running beneficiaries; victims are the lowest ranked, but
best-effort work takes blocks only from best-effort work that arrived after it, else yields its
own: density ranked a newly admitted short request above a long one already running, whose
multi-thousand-token KV its growth checkpointed, and the host tier evicted, so it was
recomputed; bros's arrival order among best-effort work never did that); a running on-time RT
stream short of KV waits for free blocks while its next token keeps `preempt_horizon_steps` steps
of slack and a step is in flight, as bros's (`slo_step.growth_may_wait`: on the suite's tuning
half its growth had taken best-effort blocks that a step's wait would have freed, and 2 GiB of
host tier could not hold those checkpoints); a best-effort or deadline victim is preempted by
CHECKPOINT (its KV goes to the KV store's host tier and comes back on resume), an RT victim by
recompute. A waiting request below on-time work
is admitted only when no such request is mid-prompt and the free KV holds its whole prompt
(`slo_step.py`). Seats, as bros (opt-in, `take_seats`, off by default for the reason bros's
docstring gives): at `max_num_seqs` a waiting on-time RT request takes the seat of best-effort
work or a lost deadline request whose KV is no larger than its prompt and whose checkpoint fits
the host tier (`victim_hold_s`; `slo_step.may_take_seat_of`).
"""

from __future__ import annotations

import math

from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.cost_model import CostModel
from scheduler_svc.core.output_lengths import OnlineLengths, OutputLengths
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.policy.base import Policy, PreemptionMode, TicketView
from scheduler_svc.core.policy.slo_step import SloStep, growth_may_wait, may_take_seat_of, on_time
from scheduler_svc.core.policy.slo_watch import is_aged, is_lost
from scheduler_svc.core.policy.step_guard import StepGuard, make_cost_model
from scheduler_svc.core.policy.tempo_reward import TempoPricing, TempoState
from scheduler_svc.core.request import FinishReason, Request, ServiceClass
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.work_ahead import WorkAhead
from scheduler_svc.core.workflow_graph import WorkflowTracker


_RT = ServiceClass.REAL_TIME
_BE = ServiceClass.BEST_EFFORT

class TempoPolicy(Policy):
    name = "tempo"
    running_key_ttl = 10
    waiting_key_ttl = 50  # full re-key: the lazy one is capped per step; workflow keys and aging improve
    waiting_keys_only_worsen = True

    def __init__(
        self,
        *,
        aging_s: float | None = 60.0,
        penalty: float = 100.0,
        decode_weight: float = 8.0,
        best_effort_weight: float = 0.5,
        quantile: float = 0.95,
        min_samples: int = 20,
        unit_time_s: float = 0.02,
        prefill_tokens_per_step: int = 512,
        default_num_stages: int = 4,
        workflow_idle_close_s: float = 30.0,
        step_time_ema: float = 0.2,
        cost_model: CostModel | None = None,
        cost_model_path: str | None = None,
        online_cost_model: bool = True,
        min_prefill_chunk: int = 16,
        stream_reserve_tpots: float = 1.0,
        slack_bank_tpots: float = 0.0,
        bank_fill_pace: float = 0.5,
        lengths: OutputLengths | None = None,
        take_seats: bool = False,
        victim_hold_s: float = 1.0,
        preempt_horizon_steps: float = 2.0,
    ) -> None:
        """`lengths`: where output lengths come from; None (always, in the service: `make_policy`
        refuses this option) learns them online from finished requests (`OnlineLengths`). The
        simulator's oracle of issue 9's target 4 is the only other one (core/output_lengths.py)."""
        # The core's promotion would rank a starved BE request above on-time RT: aging is ours.
        super().__init__(aging_s=None)
        if aging_s is not None and not aging_s > 0:
            raise ValueError(f"aging_s must be > 0 seconds or None (got {aging_s})")
        self.starvation_s = aging_s
        cost, self.online_cost = make_cost_model(cost_model, cost_model_path, online_cost_model)
        self.cost = cost
        self.guard = StepGuard(cost, self.online_cost, step_time_ema)
        self.step = SloStep(self.guard, min_prefill_chunk, stream_reserve_tpots, slack_bank_tpots, bank_fill_pace)
        if penalty <= 0 or decode_weight <= 0 or best_effort_weight <= 0 or unit_time_s <= 0:
            raise ValueError("tempo: penalty, decode_weight, best_effort_weight and unit_time_s must be > 0")
        if prefill_tokens_per_step < 1 or not 0 < step_time_ema <= 1:
            raise ValueError("tempo: prefill_tokens_per_step >= 1 and 0 < step_time_ema <= 1")
        self._ema = step_time_ema
        self.lengths: OutputLengths = lengths if lengths is not None else OnlineLengths(quantile, min_samples)
        self.workflows = WorkflowTracker(default_num_stages=default_num_stages, idle_close_s=workflow_idle_close_s)
        self.pricing = TempoPricing(penalty=penalty, decode_weight=decode_weight,
                                    best_effort_weight=best_effort_weight, unit_time_s=unit_time_s,
                                    prefill_tokens_per_step=prefill_tokens_per_step, lengths=self.lengths,
                                    workflows=self.workflows)
        self._members: dict[str, dict[str, Request]] = {}
        self._collective: dict[str, tuple[float, tuple]] = {}  # workflow_id -> (now, shared key)
        if victim_hold_s < 0 or preempt_horizon_steps < 0:
            raise ValueError(f"tempo: victim_hold_s and preempt_horizon_steps must be >= 0 (got {victim_hold_s}, "
                             f"{preempt_horizon_steps})")
        self.preempt_horizon_steps = preempt_horizon_steps
        self.take_seats = take_seats
        self.victim_hold_s = victim_hold_s
        self._now = 0.0

    # ---- learning hooks ------------------------------------------------------------------------
    def on_added(self, req: Request, now: float) -> None:
        req.policy_state = TempoState(self.lengths.upper_bound(req, 0))
        if req.workflow is not None:
            self.workflows.on_added(req, now)
            self._members.setdefault(req.workflow.workflow_id, {})[req.request_id] = req

    def on_finished(self, req: Request, now: float) -> None:
        if req.finish_reason in (FinishReason.STOP, FinishReason.LENGTH):
            self.lengths.observe(req)
        if req.workflow is not None:
            self.workflows.on_finished(req, now)
            members = self._members.get(req.workflow.workflow_id)
            if members is not None:
                members.pop(req.request_id, None)
                if not members:
                    del self._members[req.workflow.workflow_id]
                    self._collective.pop(req.workflow.workflow_id, None)

    def observe_step(self, timing: StepTiming | None, now: float) -> None:
        self.guard.observe(timing)
        if timing is not None and timing.total_ns > 0:
            pricing = self.pricing
            pricing.unit_time_s += self._ema * (timing.total_ns / 1e9 - pricing.unit_time_s)

    def begin_step(self, draft: StepDraft) -> None:
        self.workflows.close_idle(draft.now)
        self.step.begin_step(draft)
        self._now = draft.now

    # ---- the step guard (policy/slo_step.py) ---------------------------------------------------
    def limit_tokens(self, req: Request, num_tokens: int, is_decode: bool, draft: StepDraft,
                     ticket: TicketView) -> int:
        watch = self._state(req).watch
        if is_decode and req.service_class is _RT:
            return num_tokens  # band 0: every stream's decode, one token each
        return self.step.limit(req, watch, num_tokens, is_decode, draft, watch.aged or ticket.promoted_at is not None)

    def on_scheduled(self, req: Request, num_tokens: int, is_decode: bool, sample: bool, draft: StepDraft,
                     ticket: TicketView) -> None:
        self.step.on_scheduled(req, self._state(req).watch, is_decode, sample, draft)

    def preemption_mode(self, victim: Request) -> PreemptionMode:
        return PreemptionMode.RECOMPUTE if victim.service_class is _RT else PreemptionMode.CHECKPOINT

    def growth_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        # Best-effort work takes KV only from best-effort work that arrived after it: density
        # ranks a newly admitted short request above a long one already running, whose KV its
        # growth took (checkpointed, or recomputed once the host tier was full), again and again.
        if beneficiary.service_class is _BE and victim.service_class is _BE:
            return (victim.arrival_s, victim.request_id) > (beneficiary.arrival_s, beneficiary.request_id)
        return True

    def growth_may_wait(self, beneficiary: Request) -> bool:
        return growth_may_wait(beneficiary, self._state(beneficiary).watch, self.guard, self.preempt_horizon_steps)

    def may_take_seats(self, beneficiary: Request) -> bool:
        return (self.take_seats and beneficiary.service_class is _RT
                and on_time(beneficiary, self._state(beneficiary).watch))

    def seat_may_preempt(self, beneficiary: Request, victim: Request) -> bool:
        return may_take_seat_of(beneficiary, victim, self._state(victim).watch, self._now, self.victim_hold_s)

    def kv_reserve(self, req: Request) -> int:
        return self.step.kv_reserve(req, self._state(req).watch)

    def forecast_first_token_s(self, work: WorkAhead) -> float | None:
        return self.guard.forecast_s(work)

    def bind(self, config: SchedulerConfig) -> None:
        self.step.bind(config)

    # ---- priority ------------------------------------------------------------------------------
    def _state(self, req: Request) -> TempoState:
        return self.pricing.state(req)

    def key(self, req: Request, now: float) -> tuple:
        watch = self._state(req).watch
        if req.slo.service_class is _RT:
            # Urgency band: a stream's next token, or a first token still attainable, is due
            # at a fixed time; earliest first, ahead of all density-ranked work.
            if req.output_token_ids or req.num_output_placeholders:
                return (0, req.next_token_deadline_s(), 0.0)
            prefill_left = max(0, req.num_tokens - req.num_computed_tokens)
            eta = self.cost.step_time(prefill_left, 0, 0) - self.cost.step_time(0, 0, 0)
            if not is_lost(req, watch, now, eta):
                return (0, req.token_deadline_s(0), 0.0)
        elif req.slo.service_class is ServiceClass.DEADLINE and not is_lost(req, watch, now, 0.0):
            # Urgency band too while its typical length still fits: by its latest start time.
            start_by = self.pricing.latest_start(req, now)
            if start_by is not None:
                return (0, start_by, 0.0)
            if self.pricing.unpriced_but_feasible(req, now):
                # Ahead of density, beside aged work, by when it was last served: served from what
                # the urgency band leaves, so its tenant learns its own lengths.
                since = watch.last_progress_s
                return (1, -math.inf, req.arrival_s if math.isnan(since) else since)
        if is_aged(req, watch, now, self.starvation_s):
            return (1, -math.inf, watch.last_progress_s)
        if req.workflow is not None and req.workflow.workflow_id in self._members:
            return self._collective_key(req.workflow.workflow_id, now)
        reward, remain_time = self.pricing.reward(req, now)
        return (1, -reward / remain_time, remain_time)

    def _collective_key(self, workflow_id: str, now: float) -> tuple:
        cached = self._collective.get(workflow_id)
        if cached is not None and cached[0] == now:
            return cached[1]
        total, longest = 0.0, 0.0
        for member in self._members[workflow_id].values():
            reward, remain_time = self.pricing.reward(member, now)
            total += reward
            longest = max(longest, remain_time)
        key = (1, -total / longest, longest)
        self._collective[workflow_id] = (now, key)
        return key

