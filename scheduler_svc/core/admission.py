"""Opt-in real-time admission control (`SchedulerConfig.rt_admission_control`, the service's
`--rt-admission-control`; issue 9's target 5): `add_request` rejects a new real-time request
whose predicted TTFT exceeds its TTFT SLO, instead of queueing it to push others late.

The prediction is the policy's own (`Policy.forecast_first_token_s`, the cost model it plans
with): the time already waited, plus the plans in flight, plus the steps that compute every
prompt the policy ranks ahead of the new request and then its own, each step also carrying the
running streams' decodes and lasting at most their tightest TPOT (as the step guard paces them).
Work the policy ranks behind it only fills the rest of the step that completes its prompt. Only new arrivals
are checked (`add_request(..., new_arrival=True)`): a request moved from another core, or resumed
with output tokens, was admitted already. The rejection is a `CapacityError` (RESOURCE_EXHAUSTED
through the one status table) whose message carries the predicted TTFT and the SLO, and whose
`retry_after_s` is the amount by which the prediction misses, so a router can send it elsewhere.
"""

from __future__ import annotations

import math

from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.errors import TtftInfeasibleError
from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.request import Request, ServiceClass
from scheduler_svc.core.roster import Roster
from scheduler_svc.core.work_ahead import WorkAhead


class RtAdmission:
    """Checks new RT requests against their TTFT SLO (module docstring)."""

    __slots__ = ("_policy", "_budget", "last_forecast_s")

    def __init__(self, config: SchedulerConfig, policy: Policy) -> None:
        probe = WorkAhead(prefill_tokens=1, prefill_behind=0, decode_seqs=0, kv_tokens=0,
                          token_budget=config.max_num_batched_tokens)
        if policy.forecast_first_token_s(probe) is None:
            raise ValueError(f"RT admission control needs a policy that prices steps with a cost model "
                             f"(bros or tempo), not {policy.name!r}")
        self._policy = policy
        self._budget = config.max_num_batched_tokens
        # Predicted TTFT (seconds after arrival) of the last RT request checked, admitted or not.
        self.last_forecast_s: float | None = None

    def check(self, req: Request, roster: Roster, now: float) -> None:
        """Raises TtftInfeasibleError when `req` (a new RT request) would miss its TTFT."""
        self.last_forecast_s = None
        if req.slo.service_class is not ServiceClass.REAL_TIME or req.slo.ttft_ms is None or req.output_token_ids:
            return
        predicted = (now - req.arrival_s) + self._forecast(req, roster, now)
        self.last_forecast_s = predicted
        slo_s = req.slo.ttft_ms / 1000.0
        if predicted > slo_s:
            raise TtftInfeasibleError(predicted, slo_s)

    def _forecast(self, req: Request, roster: Roster, now: float) -> float:
        key = roster.key_if_added(req, now)
        prefill = req.num_uncached_prompt_tokens
        decodes = kv = behind = 0
        cap_s = math.inf
        for t in roster.requests.values():
            other = t.req
            if other.is_finished:
                continue
            left = other.num_tokens - other.num_computed_tokens
            if other.request_id in roster.running:
                kv += other.num_computed_tokens
                if left <= 1:
                    decodes += 1
                    if other.service_class is ServiceClass.REAL_TIME and other.slo.tpot_ms is not None:
                        cap_s = min(cap_s, other.slo.tpot_ms / 1000.0)
                    continue
            if left > 0:
                if t.sched_key < key:
                    prefill += left
                else:
                    behind += left
        work = WorkAhead(prefill_tokens=prefill, prefill_behind=behind, decode_seqs=decodes, kv_tokens=kv,
                         token_budget=self._budget, step_time_cap_s=cap_s)
        forecast = self._policy.forecast_first_token_s(work)
        assert forecast is not None  # checked at construction
        return forecast
