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

Urgency band (the per-token deadlines of streams, ahead of density). A real-time request whose
stream has started (or that is running) ranks in band 0 by the deadline of its next token,
earliest first, as does a waiting one whose first-token deadline has not passed yet. Everything
else, including a waiting RT request that already missed its TTFT (its SLO is lost; what it can
still earn is its catch-up stream, which density prices), ranks in band 1 by density. Why: with
density alone a short deadline/BE prefill could outrank a streaming decode, take the step's
token budget and skip it (misses at tokens 150–300 of long outputs), and a late RT request's
reward collapsed so it sank until aging. A decode is one token, so band 0 costs the density
ranking little budget; a stream's band-0 key is fixed between its tokens, and a waiting key only
moves from band 0 to band 1 (never better), which keeps `waiting_keys_only_worsen` true.

Priority in band 1 = service gain density (§2.5): `reward / remain_time`, key `(1, −density, remain_time)`,
where `remain_time = unit_time · (remain_len + prefill_left / prefill_tokens_per_step)`,
`unit_time` is the measured step time (EMA over step results, seeded with `unit_time_s`),
`remain_len = bound − produced`, and the reward is the gain the request earns from now on if
served at that pace plus what it has already earned:

- RT not started: `in·r(ttft, serve + unit)^p + w_d·L·r(ttft + tpot·L, serve + remain_time)^p`;
- RT streaming: `gain_so_far + w_d·remain_len·r(ttft + tpot·L, serve + remain_time)^p`;
- deadline / workflow member: `(in + w_d·L)·r(deadline, serve + remain_time)^p`;

with `L` the request's output-length upper bound (`LengthPredictor`: online per-(tenant, prompt
bucket) quantiles of finished requests; `max_tokens` until enough have finished; raised when a
request outgrows it). The true output length is never read. Members of one workflow share one
key: `(1, −Σ member rewards / max member remain_time, ·)` (siblings rise and fall together).

Keys of running requests are refreshed every 10 steps (the artifact recomputes every
`schedule_interval` iterations). A waiting request's density only decays while it waits (its
bound is fixed, its deadline factor shrinks), so waiting keys are refreshed lazily at the top of
the queue (`waiting_keys_only_worsen`, at most 32 per step), plus a full re-key every 200
steps (workflow keys can improve when a long sibling finishes). This keeps `schedule()` cheap;
the full re-key costs O(waiting) once per 200 steps (~40 ms at 10,000 waiting on a slow CPU). Density favours
short and urgent work, so long best-effort requests rely on aging (default 60 s, `base.py`).
Preemption only on KV shortage (running beneficiaries), victims are the lowest density.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_svc.core.length_predictor import LengthPredictor
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.request import FinishReason, Request, RequestStatus, ServiceClass
from scheduler_svc.core.step_draft import StepDraft
from scheduler_svc.core.workflow_graph import WorkflowTracker


_RT = ServiceClass.REAL_TIME
_RUNNING = RequestStatus.RUNNING


@dataclass(slots=True)
class _TempoState:
    bound: int  # current output-length upper bound
    gain: float = 0.0  # service gain earned so far (RT)
    accounted: int = 0  # output tokens already credited


def _r(x: float, y: float) -> float:
    if y <= 0:
        return 1.0
    return min(1.0, max(1e-6, x / y))


class TempoPolicy(Policy):
    name = "tempo"
    running_key_ttl = 10
    waiting_key_ttl = 200  # full re-key: the lazy one is capped per step, and workflow keys can improve
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
    ) -> None:
        super().__init__(aging_s=aging_s)
        if penalty <= 0 or decode_weight <= 0 or best_effort_weight <= 0 or unit_time_s <= 0:
            raise ValueError("tempo: penalty, decode_weight, best_effort_weight and unit_time_s must be > 0")
        if prefill_tokens_per_step < 1 or not 0 < step_time_ema <= 1:
            raise ValueError("tempo: prefill_tokens_per_step >= 1 and 0 < step_time_ema <= 1")
        self.p = penalty
        self.w_d = decode_weight
        self.be_weight = best_effort_weight
        self.unit_time_s = unit_time_s
        self.prefill_tokens_per_step = prefill_tokens_per_step
        self._ema = step_time_ema
        self.predictor = LengthPredictor(quantile=quantile, min_samples=min_samples)
        self.workflows = WorkflowTracker(default_num_stages=default_num_stages, idle_close_s=workflow_idle_close_s)
        self._members: dict[str, dict[str, Request]] = {}
        self._collective: dict[str, tuple[float, tuple]] = {}  # workflow_id -> (now, shared key)

    # ---- learning hooks ------------------------------------------------------------------------
    def on_added(self, req: Request, now: float) -> None:
        req.policy_state = _TempoState(self._bound(req, 0))
        if req.workflow is not None:
            self.workflows.on_added(req, now)
            self._members.setdefault(req.workflow.workflow_id, {})[req.request_id] = req

    def on_finished(self, req: Request, now: float) -> None:
        if req.finish_reason in (FinishReason.STOP, FinishReason.LENGTH):
            self.predictor.observe(req.tenant, req.num_prompt_tokens, req.num_output_tokens)
        if req.workflow is not None:
            self.workflows.on_finished(req, now)
            members = self._members.get(req.workflow.workflow_id)
            if members is not None:
                members.pop(req.request_id, None)
                if not members:
                    del self._members[req.workflow.workflow_id]
                    self._collective.pop(req.workflow.workflow_id, None)

    def observe_step(self, timing: StepTiming | None, now: float) -> None:
        if timing is not None and timing.total_ns > 0:
            self.unit_time_s += self._ema * (timing.total_ns / 1e9 - self.unit_time_s)

    def begin_step(self, draft: StepDraft) -> None:
        self.workflows.close_idle(draft.now)

    # ---- priority ------------------------------------------------------------------------------
    def key(self, req: Request, now: float) -> tuple:
        if req.workflow is not None and req.workflow.workflow_id in self._members:
            return self._collective_key(req.workflow.workflow_id, now)
        if req.slo.service_class is _RT:
            # Urgency band: a stream's next token, or a first token still attainable, is due
            # at a fixed time; earliest first, ahead of all density-ranked work.
            if req.output_token_ids or req.status is _RUNNING:
                return (0, req.next_token_deadline_s(), 0.0)
            ttft_due = req.token_deadline_s(0)
            if now <= ttft_due:
                return (0, ttft_due, 0.0)
        reward, remain_time = self._reward(req, now)
        return (1, -reward / remain_time, remain_time)

    def _collective_key(self, workflow_id: str, now: float) -> tuple:
        cached = self._collective.get(workflow_id)
        if cached is not None and cached[0] == now:
            return cached[1]
        total, longest = 0.0, 0.0
        for member in self._members[workflow_id].values():
            reward, remain_time = self._reward(member, now)
            total += reward
            longest = max(longest, remain_time)
        key = (1, -total / longest, longest)
        self._collective[workflow_id] = (now, key)
        return key

    def _bound(self, req: Request, produced: int) -> int:
        return self.predictor.upper_bound(req.tenant, req.num_prompt_tokens, req.sampling.max_tokens, produced)

    def _reward(self, req: Request, now: float) -> tuple[float, float]:
        """(reward from now on plus gain so far, remaining GPU time) of one request."""
        state = req.policy_state
        if not isinstance(state, _TempoState):
            state = req.policy_state = _TempoState(self._bound(req, 0))
        produced = req.num_scheduled_outputs
        if produced >= state.bound:
            state.bound = self._bound(req, produced)
        bound = state.bound
        remain_len = max(1, bound - produced)
        prefill_left = max(0, req.num_tokens - req.num_computed_tokens)
        unit = self.unit_time_s
        remain_time = unit * (remain_len + prefill_left / self.prefill_tokens_per_step)
        serve = now - req.arrival_s
        finish = serve + remain_time
        p, w_d, n_in = self.p, self.w_d, req.num_prompt_tokens
        stage_deadline = self.workflows.stage_deadline_s(req) if req.workflow is not None else None
        slo = req.slo
        if stage_deadline is not None:
            reward = (n_in + w_d * bound) * _r(stage_deadline - req.arrival_s, finish) ** p
        elif slo.service_class is ServiceClass.REAL_TIME:
            ttft, tpot = slo.ttft_ms / 1000.0, slo.tpot_ms / 1000.0  # type: ignore[operator]
            stream_deadline = ttft + tpot * bound
            if not req.output_token_ids:
                reward = n_in * _r(ttft, serve + unit) ** p + w_d * bound * _r(stream_deadline, finish) ** p
            else:
                self._account(req, state, ttft, tpot)
                reward = state.gain + w_d * remain_len * _r(stream_deadline, finish) ** p
        elif slo.service_class is ServiceClass.DEADLINE:
            reward = (n_in + w_d * bound) * _r(slo.deadline_ms / 1000.0, finish) ** p  # type: ignore[operator]
        else:
            reward = self.be_weight * (n_in + w_d * bound)
        return reward, remain_time

    def _account(self, req: Request, state: _TempoState, ttft: float, tpot: float) -> None:
        """Credits the RT tokens delivered since the last call (measured delivery times)."""
        times = req.token_times_s
        p, w_d = self.p, self.w_d
        for i in range(state.accounted, len(times)):
            delay = times[i] - req.arrival_s
            if i == 0:
                state.gain += req.num_prompt_tokens * _r(ttft, delay) ** p
            state.gain += w_d * _r(ttft + i * tpot, delay) ** p
        state.accounted = len(times)
