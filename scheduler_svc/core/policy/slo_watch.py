"""Which requests can still meet their SLO, and which have waited too long: the split that bros
and tempo rank by.

An RT request is *lost* once a delivered token came after its deadline (`arrival + ttft +
i·tpot`), once its next unscheduled token is already due, or, before its first token, once even
its prefill's marginal compute time (`prefill_eta_s`, a lower bound of when it can end) would end
after the TTFT deadline. A deadline request is lost once `now` (plus that bound while it is still
in prefill) is past its deadline. Only certain losses count: an estimate that could be wrong
must not demote a request for good. Lost is sticky: attainment is all or
nothing per request, so a lost request's later tokens cannot win it back. Ranking lost work after
the work that can still make it is what keeps an overloaded step from spending itself on
requests that will miss anyway (EDF's collapse).

*Aged* (sticky too): a request not scheduled for `aging_s` seconds (queued or running), the
policies' own anti-starvation rule; unlike the core's promotion (`policy/base.py`) it never ranks
a request above RT work that is still on time.

The checks are incremental (each delivered token is compared once), O(1) per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler_svc.core.request import Request, ServiceClass

_EPS = 1e-9


@dataclass(slots=True)
class SloWatch:
    """Per-request state kept by the policy (in `Request.policy_state` or beside it)."""

    lost: bool = False
    aged: bool = False
    checked: int = 0  # delivered tokens already compared with their deadlines
    admitted_at: float = -math.inf  # last (re-)admission, seen when it was first scheduled after it
    preemptions_seen: int = -1
    # The aging clock: when it was last scheduled (`note_progress`); NaN until then, which counts
    # from its arrival. The policy's own: the core's is private to the core.
    last_progress_s: float = math.nan


def is_lost(req: Request, watch: SloWatch, now: float, prefill_eta_s: float) -> bool:
    """Whether `req` (RT or deadline) can no longer meet its SLO; see the module docstring."""
    if watch.lost:
        return True
    cls = req.service_class
    if cls is ServiceClass.REAL_TIME:
        times = req.token_times_s
        for i in range(watch.checked, len(times)):
            if times[i] > req.token_deadline_s(i) + _EPS:
                watch.lost = True
                break
        watch.checked = len(times)
        if not watch.lost:
            due = req.next_token_deadline_s()
            first_pending = not req.output_token_ids and req.num_output_placeholders == 0
            watch.lost = (now + prefill_eta_s if first_pending else now) > due + _EPS
    elif cls is ServiceClass.DEADLINE:
        eta = prefill_eta_s if req.num_computed_tokens < req.num_prompt_tokens else 0.0
        watch.lost = now + eta > req.token_deadline_s(0) + _EPS
    return watch.lost


def is_aged(req: Request, watch: SloWatch, now: float, aging_s: float | None) -> bool:
    """Whether `req` went `aging_s` seconds without being scheduled (sticky)."""
    if math.isnan(watch.last_progress_s):
        watch.last_progress_s = req.arrival_s
    if not watch.aged and aging_s is not None and now - watch.last_progress_s >= aging_s:
        watch.aged = True
    return watch.aged


def note_progress(watch: SloWatch, now: float) -> None:
    """Call when the request is scheduled: restarts its aging clock."""
    watch.last_progress_s = now


def note_admission(req: Request, watch: SloWatch, now: float) -> None:
    """Call when `req` is scheduled: records `admitted_at` on its first step after (re-)admission."""
    if watch.preemptions_seen != req.num_preemptions:
        watch.preemptions_seen = req.num_preemptions
        watch.admitted_at = now
