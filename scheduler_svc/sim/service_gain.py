"""Service gain of a run (Tempo §2.3, the step-function form of the artifact's accounting, i.e.
penalty exponent p → ∞: on time earns full value, late earns nothing).

    real-time   prompt_tokens if the first token met its TTFT, plus W_DECODE per output token
                delivered by its own deadline  arrival + ttft + i·tpot
    deadline    prompt_tokens + W_DECODE · output_tokens if it completed by its deadline
    workflow    every call of a workflow earns prompt + W_DECODE · output only if the whole
                workflow completed within its end-to-end deadline (collective requests)
    best-effort prompt_tokens + W_DECODE · output_tokens once completed (no deadline)

W_PREFILL = 1 and W_DECODE = 8 as in the Tempo artifact (a decoded token costs about 8 prefill
tokens of GPU time). The result is in token units; `llmserve bench` reports it per second of the
offered-load window.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler_svc.sim.metrics import RequestRecord
from scheduler_svc.sim.workload import BEST_EFFORT, DEADLINE, REAL_TIME

W_PREFILL = 1.0
W_DECODE = 8.0


def _workflows_met(records: Sequence[RequestRecord]) -> dict[str, bool]:
    groups: dict[str, list[RequestRecord]] = {}
    for rec in records:
        if rec.request.workflow_id and rec.request.workflow_deadline_ms:
            groups.setdefault(rec.request.workflow_id, []).append(rec)
    met = {}
    for wf, members in groups.items():
        start = min(m.arrival_s for m in members)
        limit = members[0].request.workflow_deadline_ms / 1000.0  # type: ignore[operator]
        met[wf] = all(m.complete for m in members) and max(m.finish_s for m in members) - start <= limit + 1e-9  # type: ignore[type-var]
    return met


def request_gain(rec: RequestRecord, workflow_met: bool | None) -> float:
    """Gain of one request; `workflow_met` is its workflow's outcome (None outside workflows)."""
    r = rec.request
    full = W_PREFILL * r.prompt_tokens + W_DECODE * r.output_tokens
    if workflow_met is not None:
        return full if workflow_met else 0.0
    if r.cls == REAL_TIME:
        if not rec.token_times:
            return 0.0
        ttft_met = rec.token_times[0] - rec.arrival_s <= (r.ttft_ms or 0.0) / 1000.0 + 1e-9
        return W_PREFILL * r.prompt_tokens * ttft_met + W_DECODE * rec.on_time_tokens()
    if r.cls == DEADLINE:
        return full if rec.deadline_attained() else 0.0
    assert r.cls == BEST_EFFORT
    return full if rec.complete else 0.0


def service_gain(records: Sequence[RequestRecord], end_s: float) -> float:
    """Total service gain of a run (token units)."""
    del end_s  # gains are judged per request against its own SLO
    met = _workflows_met(records)
    return sum(request_gain(rec, met.get(rec.request.workflow_id or "")) for rec in records)
