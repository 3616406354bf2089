"""Service gain of a run: the formula of the tempo policy's module docstring
(scheduler_svc/core/policy/tempo.py), applied to what was delivered.

With `r(x, y) = clamp(x / y, 1e-6, 1)`, penalty exponent `p` (100, the tempo policy's default and the
Tempo/JITServe artifact's benchmark scripts: on time earns full credit, late ≈ nothing),
decode weight `W_DECODE = 8`, prefill weight 1, times in seconds after arrival:

    real-time   the prompt earns `in · r(ttft_slo, ttft)^p` once the first token is out; token i
                earns `W_DECODE · r(ttft_slo + i·tpot_slo, t_i)^p` (full credit when on time)
    deadline    `(in + W_DECODE · out) · r(deadline, finish)^p` once complete
    workflow    every completed call earns `(in + W_DECODE · out) · r(D, latency)^p`, with D the
                workflow's end-to-end deadline and latency from its first call's arrival to its
                last call's finish (the end of the run while a call is unfinished): collective
                requests are judged as a whole, as the Tempo artifact's client does
    best-effort `BEST_EFFORT_WEIGHT · (in + W_DECODE · out)` once complete (no deadline)

Unfinished requests earn what they delivered (real-time tokens) or nothing. The total is in
token units; `summarize` reports it per second of the offered-load window.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler_svc.sim.metrics import RequestRecord
from scheduler_svc.sim.workload import BEST_EFFORT, DEADLINE, REAL_TIME

W_DECODE = 8.0
BEST_EFFORT_WEIGHT = 0.5
PENALTY = 100.0


def _r(x: float, y: float) -> float:
    if y <= 0:
        return 1.0
    return min(1.0, max(1e-6, x / y))


def _workflow_factors(records: Sequence[RequestRecord], end_s: float, p: float) -> dict[str, float]:
    groups: dict[str, list[RequestRecord]] = {}
    for rec in records:
        if rec.request.workflow_id and rec.request.workflow_deadline_ms:
            groups.setdefault(rec.request.workflow_id, []).append(rec)
    factors = {}
    for wf, members in groups.items():
        start = min(m.arrival_s for m in members)
        done = all(m.complete for m in members)
        last = max((m.finish_s for m in members if m.finish_s is not None), default=end_s) if done else end_s
        factors[wf] = _r(members[0].request.workflow_deadline_ms / 1000.0, last - start) ** p  # type: ignore[operator]
    return factors


def request_gain(rec: RequestRecord, workflow_factor: float | None, p: float = PENALTY) -> float:
    """Gain of one request; `workflow_factor` is its workflow's `r(D, latency)^p` (None outside)."""
    r = rec.request
    full = r.prompt_tokens + W_DECODE * r.output_tokens
    if workflow_factor is not None:
        return full * workflow_factor if rec.complete else 0.0
    if r.cls == REAL_TIME:
        if not rec.token_times:
            return 0.0
        ttft, tpot = (r.ttft_ms or 0.0) / 1000.0, (r.tpot_ms or 0.0) / 1000.0
        gain = r.prompt_tokens * _r(ttft, rec.token_times[0] - rec.arrival_s) ** p
        for i, t in enumerate(rec.token_times):
            gain += W_DECODE * _r(ttft + i * tpot, t - rec.arrival_s) ** p
        return gain
    if not rec.complete or rec.finish_s is None:
        return 0.0
    if r.cls == DEADLINE:
        return full * _r((r.deadline_ms or 0.0) / 1000.0, rec.finish_s - rec.arrival_s) ** p
    assert r.cls == BEST_EFFORT
    return BEST_EFFORT_WEIGHT * full


def service_gain(records: Sequence[RequestRecord], end_s: float, p: float = PENALTY) -> float:
    """Total service gain of a run (token units)."""
    factors = _workflow_factors(records, end_s, p)
    return sum(request_gain(rec, factors.get(rec.request.workflow_id or ""), p) for rec in records)
