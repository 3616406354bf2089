"""Tempo's pricing of one request: its service gain from now on and the GPU time it still needs
(the formulas of tempo.py's module docstring), from the output lengths it is given.

Split from tempo.py, which ranks with these prices; `TempoPricing.lengths` is the only source of
output lengths (`core/output_lengths.py`: online quantiles in the service, an oracle only in the
simulator), so nothing here reads a true length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler_svc.core.output_lengths import OutputLengths
from scheduler_svc.core.policy.slo_watch import SloWatch
from scheduler_svc.core.request import Request, ServiceClass
from scheduler_svc.core.workflow_graph import WorkflowTracker


@dataclass(slots=True)
class TempoState:
    bound: int  # current output-length upper bound
    gain: float = 0.0  # service gain earned so far (RT)
    accounted: int = 0  # output tokens already credited
    watch: SloWatch = field(default_factory=SloWatch)  # on time / lost / aged (slo_watch.py)


def gain_ratio(x: float, y: float) -> float:
    """`r(x, y) = clamp(x / y, 1e-6, 1)` (1 when y <= 0)."""
    if y <= 0:
        return 1.0
    return min(1.0, max(1e-6, x / y))


class TempoPricing:
    """Reward and remaining time of requests; `unit_time_s` is the policy's measured step time."""

    __slots__ = ("p", "w_d", "be_weight", "unit_time_s", "prefill_tokens_per_step", "lengths", "workflows")

    def __init__(self, *, penalty: float, decode_weight: float, best_effort_weight: float, unit_time_s: float,
                 prefill_tokens_per_step: int, lengths: OutputLengths, workflows: WorkflowTracker) -> None:
        self.p = penalty
        self.w_d = decode_weight
        self.be_weight = best_effort_weight
        self.unit_time_s = unit_time_s
        self.prefill_tokens_per_step = prefill_tokens_per_step
        self.lengths = lengths
        self.workflows = workflows

    def state(self, req: Request) -> TempoState:
        state = req.policy_state
        if not isinstance(state, TempoState):
            state = req.policy_state = TempoState(self.lengths.upper_bound(req, 0))
        return state

    def reward(self, req: Request, now: float) -> tuple[float, float]:
        """(reward from now on plus gain so far, remaining GPU time) of one request."""
        state = self.state(req)
        produced = req.num_scheduled_outputs
        if produced >= state.bound:
            state.bound = self.lengths.upper_bound(req, produced)
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
            reward = (n_in + w_d * bound) * self._on_time(req, stage_deadline - req.arrival_s, serve, produced,
                                                          prefill_left, finish)
        elif slo.service_class is ServiceClass.REAL_TIME:
            ttft, tpot = slo.ttft_ms / 1000.0, slo.tpot_ms / 1000.0  # type: ignore[operator]
            stream_deadline = ttft + tpot * bound
            if not req.output_token_ids:
                reward = n_in * gain_ratio(ttft, serve + unit) ** p + w_d * bound * gain_ratio(stream_deadline, finish) ** p
            else:
                self._account(req, state, ttft, tpot)
                reward = state.gain + w_d * remain_len * gain_ratio(stream_deadline, finish) ** p
        elif slo.service_class is ServiceClass.DEADLINE:
            reward = (n_in + w_d * bound) * self._on_time(req, slo.deadline_ms / 1000.0, serve, produced,  # type: ignore[operator]
                                                          prefill_left, finish)
        else:
            reward = self.be_weight * (n_in + w_d * bound)
        return reward, remain_time

    def latest_start(self, req: Request, now: float) -> float | None:
        """When a deadline request must start decoding to finish its median remaining length by
        its deadline at the measured pace; None when that is already past, or when even the
        borrowed median says it is: its deadline then competes on density.

        Two estimates, for two decisions. *When to start* uses its own tenant's lengths only
        (other tenants' chat or batch outputs say little about a tool call's), and with none
        yet it gets the benefit of the doubt, as under EDF: a borrowed median that is too long
        for this tenant started its requests early, ahead of RT first tokens (tuning half: RT
        within 0.02 of dedicated in 89 cells of 95 against 91). *Whether it is still worth the
        urgency band* also uses the other tenants' lengths until its own tenant has a few
        (`OutputLengths.typical_with_prior`): with the benefit of the doubt alone, requests far
        too long for their deadline took band 0 and their prefills were wasted under overload,
        crowding out RT work (target 4: tempo's gain 0.87x the oracle's on
        `agentic-tight-poisson` x4, docs/scheduling.md section 1.1). Not the length bound: at
        max_tokens (a cold start) every deadline request of a new tenant looked hopeless, was
        never served, and so never taught the predictor its lengths (deadline attainment 0.00
        against edf's 0.93 in the suite)."""
        produced = req.num_scheduled_outputs
        prefill_steps = max(0, req.num_tokens - req.num_computed_tokens) / self.prefill_tokens_per_step
        due = req.token_deadline_s(0)
        own = self.lengths.typical(req, produced)
        # Once the tenant's own median exists it is also the borrowed one (typical_with_prior).
        borrowed = own if own is not None else self.lengths.typical_with_prior(req, produced)
        if borrowed is not None and due - self.unit_time_s * (max(0, borrowed - produced) + prefill_steps) < now:
            return None
        start_by = due - self.unit_time_s * (max(0, (produced if own is None else own) - produced) + prefill_steps)
        return start_by if start_by >= now else None

    def unpriced_but_feasible(self, req: Request, now: float) -> bool:
        """Whether a deadline request that `latest_start` keeps out of the urgency band has no
        lengths of its own tenant to be priced on (the other tenants' doubted it) and could still
        finish if its output ended with its next token: then it must not compete on density.
        Density would price it on the same borrowed lengths, below best-effort work when those
        are long, so it was not served and its tenant never learnt its own lengths (tuning half:
        `be_heavy-tight-long-bursty` x4, 10 deadline requests of 6-27 tokens under a 5 s deadline
        that edf met finished ~54 s after arrival, when aging promoted them)."""
        produced = req.num_scheduled_outputs
        if self.lengths.typical(req, produced) is not None:
            return False
        prefill_steps = max(0, req.num_tokens - req.num_computed_tokens) / self.prefill_tokens_per_step
        return req.token_deadline_s(0) - self.unit_time_s * (1 + prefill_steps) >= now

    def _on_time(self, req: Request, deadline_s: float, serve: float, produced: int, prefill_left: int,
                 finish: float) -> float:
        """P(the request finishes by `deadline_s` after arrival), from the learnt lengths; at a
        cold start, the gain factor at the length bound (tempo.py's module docstring)."""
        room = (deadline_s - serve) / self.unit_time_s - prefill_left / self.prefill_tokens_per_step  # tokens that fit
        share = self.lengths.fraction_at_most(req, produced, produced + room)
        if share is None:
            return gain_ratio(deadline_s, finish) ** self.p
        return share

    def _account(self, req: Request, state: TempoState, ttft: float, tpot: float) -> None:
        """Credits the RT tokens delivered since the last call (measured delivery times)."""
        times = req.token_times_s
        p, w_d = self.p, self.w_d
        for i in range(state.accounted, len(times)):
            delay = times[i] - req.arrival_s
            if i == 0:
                state.gain += req.num_prompt_tokens * gain_ratio(ttft, delay) ** p
            state.gain += w_d * gain_ratio(ttft + i * tpot, delay) ** p
        state.accounted = len(times)
