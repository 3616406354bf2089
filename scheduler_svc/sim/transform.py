"""Workload transforms for a bench run: keep the first N requests, cap lengths, stretch time."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from scheduler_svc.sim.workload import WorkloadRequest


def first_requests(requests: Sequence[WorkloadRequest], n: int) -> list[WorkloadRequest]:
    """The first `n` requests by arrival, minus any whose dependencies were cut (transitively)."""
    chosen = sorted(requests, key=lambda r: (r.arrival_s, r.id))[:n]
    kept: dict[str, WorkloadRequest] = {}
    for req in sorted(chosen, key=lambda r: (r.stage, r.arrival_s, r.id)):
        if all(d in kept for d in req.depends_on):
            kept[req.id] = req
    return sorted(kept.values(), key=lambda r: (r.arrival_s, r.id))


def cap_lengths(requests: Sequence[WorkloadRequest], max_prompt: int | None, max_output: int | None) -> list[WorkloadRequest]:
    """Caps prompt and output lengths (a small CPU model cannot take a 4k prompt per request)."""
    out = []
    for r in requests:
        p = min(r.prompt_tokens, max_prompt) if max_prompt else r.prompt_tokens
        o = min(r.output_tokens, max_output) if max_output else r.output_tokens
        out.append(dataclasses.replace(r, prompt_tokens=p, output_tokens=o))
    return out


def stretch_time(requests: Sequence[WorkloadRequest], factor: float) -> list[WorkloadRequest]:
    """Multiplies every time (arrivals, think times, SLOs) by `factor`: `factor` 50 replays a
    workload sized for a GPU on a machine 50 times slower with the same relative load and slack."""
    if factor <= 0:
        raise ValueError(f"time scale must be > 0, got {factor}")
    if factor == 1:
        return list(requests)

    def scale(v: float | None) -> float | None:
        return None if v is None else v * factor

    return [dataclasses.replace(r, arrival_s=r.arrival_s * factor, think_s=r.think_s * factor,
                                ttft_ms=scale(r.ttft_ms), tpot_ms=scale(r.tpot_ms), deadline_ms=scale(r.deadline_ms),
                                workflow_deadline_ms=scale(r.workflow_deadline_ms)) for r in requests]


def scale_rate(requests: Sequence[WorkloadRequest], rate_scale: float) -> list[WorkloadRequest]:
    """Compresses arrival times by `rate_scale` (2 = twice the request rate); SLOs, think times and
    lengths stay. Used by `llmserve bench --rate-scale` sweeps on a fixed workload file."""
    if rate_scale <= 0:
        raise ValueError(f"rate scale must be > 0, got {rate_scale}")
    return [dataclasses.replace(r, arrival_s=r.arrival_s / rate_scale) for r in requests]
