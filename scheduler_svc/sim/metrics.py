"""Per-request records of a run and the summary metrics of `llmserve bench`.

SLO attainment follows Tempo: a real-time request attains when token i (0-based) arrives within
`ttft_ms + i * tpot_ms` of its arrival, for every one of its tokens; a deadline request when it
finishes within `deadline_ms`. A request still unfinished at the end of the run does not attain.
Latency percentiles are censored at the end of the run: a request that never got its first token
counts with `end - arrival` (a lower bound), so starvation shows up in p99 instead of vanishing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scheduler_svc.sim.workload import BEST_EFFORT, DEADLINE, REAL_TIME, WorkloadRequest


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request. Times are seconds of the run's clock."""

    request: WorkloadRequest
    arrival_s: float  # when it was actually submitted (after its dependencies for workflow calls)
    token_times: list[float] = field(default_factory=list)
    finish_s: float | None = None
    finish_reason: str = ""  # "rejected": refused at arrival by the RT admission control
    num_preemptions: int = 0
    # RT admission control's predicted TTFT (seconds after arrival), when it checked the request.
    predicted_ttft_s: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_s is not None and self.finish_reason not in ("error", "cancelled", "rejected")

    @property
    def complete(self) -> bool:
        """Finished with its full (true) output length."""
        return self.finished and len(self.token_times) >= self.request.output_tokens

    def ttft_s(self, end_s: float) -> float:
        """Time to first token, censored at `end_s`."""
        return (self.token_times[0] if self.token_times else end_s) - self.arrival_s

    def mean_tpot_s(self) -> float | None:
        """Mean gap between output tokens after the first, None with fewer than 2 tokens."""
        if len(self.token_times) < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (len(self.token_times) - 1)

    def rt_attained(self) -> bool:
        r = self.request
        if r.cls != REAL_TIME or not self.complete:
            return False
        ttft, tpot = (r.ttft_ms or 0.0) / 1000.0, (r.tpot_ms or 0.0) / 1000.0
        eps = 1e-9
        return all(t - self.arrival_s <= ttft + i * tpot + eps for i, t in enumerate(self.token_times))

    def on_time_tokens(self) -> int:
        """Real-time: how many tokens met their own per-token deadline."""
        r = self.request
        ttft, tpot = (r.ttft_ms or 0.0) / 1000.0, (r.tpot_ms or 0.0) / 1000.0
        return sum(1 for i, t in enumerate(self.token_times) if t - self.arrival_s <= ttft + i * tpot + 1e-9)

    def deadline_attained(self) -> bool:
        r = self.request
        if r.cls != DEADLINE or not self.complete or r.deadline_ms is None:
            return False
        assert self.finish_s is not None
        return self.finish_s - self.arrival_s <= r.deadline_ms / 1000.0 + 1e-9

    def attained(self) -> bool:
        """The request met its SLO (best-effort: it completed)."""
        if self.request.cls == REAL_TIME:
            return self.rt_attained()
        if self.request.cls == DEADLINE:
            return self.deadline_attained()
        return self.complete


@dataclass(frozen=True)
class RunStats:
    """Run-level counters that are not per request."""

    start_s: float  # first arrival
    arrivals_end_s: float  # last arrival (end of the offered-load window)
    end_s: float  # when the run stopped
    num_steps: int
    preemptions: int | None  # None where not observable (live replay)
    kv_util_mean: float | None  # time-weighted mean fraction of KV blocks in use over busy steps
    # KV tokens computed twice (lost on preemption beyond the resume point, or a failed restore),
    # by class name ("real_time", "deadline", "best_effort"); None where not observable.
    recomputed_tokens: dict[str, int] | None = None
    # Host-tier counters, reported as they are (host_tier_checkpoints, _restores, _refusals,
    # _evictions, _failed_restores, _transfer_s); None when the run had no host tier.
    checkpoint: dict[str, float] | None = None
    # Prefix-cache counters (prefix_hit_blocks, prefix_cacheable_blocks, prefix_hit_rate: at first
    # admissions; prefill_tokens_saved: at every admission; prefix_inserted_blocks,
    # prefix_evicted_blocks); None without a cache.
    prefix: dict[str, float] | None = None


ServiceGainFn = Callable[[Sequence[RequestRecord], float], float]


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _frac(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def workflow_attainment(records: Sequence[RequestRecord]) -> float | None:
    """Fraction of workflows whose every call completed within the workflow deadline after the
    first call's arrival; None when the workload has no workflows with a deadline."""
    groups: dict[str, list[RequestRecord]] = {}
    for rec in records:
        if rec.request.workflow_id and rec.request.workflow_deadline_ms:
            groups.setdefault(rec.request.workflow_id, []).append(rec)
    met = 0
    for members in groups.values():
        start = min(m.arrival_s for m in members)
        limit = members[0].request.workflow_deadline_ms / 1000.0  # type: ignore[operator]
        if all(m.complete for m in members) and max(m.finish_s for m in members) - start <= limit + 1e-9:  # type: ignore[type-var]
            met += 1
    return _frac(met, len(groups))


def _admission_metrics(rt: Sequence[RequestRecord]) -> dict:
    """RT admission control (opt-in): the requests it rejected at arrival, the attainment of those
    it admitted, and its TTFT forecast against what each admitted request got (median |error|
    and median error, predicted - actual, ms)."""
    admitted = [r for r in rt if r.finish_reason != "rejected"]
    errors = [(r.predicted_ttft_s - (r.token_times[0] - r.arrival_s)) * 1000.0 for r in admitted
              if r.predicted_ttft_s is not None and r.token_times]
    return {
        "rt_rejected": len(rt) - len(admitted),
        "rt_slo_attainment_admitted": _frac(sum(r.rt_attained() for r in admitted), len(admitted)),
        "rt_ttft_forecast_abs_err_p50_ms": _pct([abs(e) for e in errors], 0.5),
        "rt_ttft_forecast_err_p50_ms": _pct(errors, 0.5),
    }


def summarize(records: Sequence[RequestRecord], stats: RunStats, service_gain: ServiceGainFn) -> dict:
    """The `results.json` metrics of one policy (fractions in [0, 1]; None for an absent class).

    BE throughput is BE output tokens generated inside the offered-load window [first arrival,
    last arrival] divided by its length, so a policy cannot look better by draining a backlog
    after the load stops (`be_throughput_run_tok_s` is the whole-job view: all BE tokens over
    first arrival -> last BE token); goodput is SLO-attaining requests per second of the same window, and
    service gain (see service_gain.py) is per second of the window too.
    """
    rt = [r for r in records if r.request.cls == REAL_TIME]
    dl = [r for r in records if r.request.cls == DEADLINE]
    be = [r for r in records if r.request.cls == BEST_EFFORT]
    window = max(stats.arrivals_end_s - stats.start_s, 1e-9)
    be_tokens = sum(1 for r in be for t in r.token_times if t <= stats.arrivals_end_s)
    be_done = [r.finish_s - r.arrival_s for r in be if r.complete and r.finish_s is not None]
    be_last = max((t for r in be for t in r.token_times[-1:]), default=None)
    be_all_tokens = sum(len(r.token_times) for r in be)
    ttfts = [r.ttft_s(stats.end_s) * 1000.0 for r in rt]
    be_completed = sum(1 for r in be if r.complete)
    gain = service_gain(records, stats.end_s)
    recomputed = stats.recomputed_tokens
    tpots = [t * 1000.0 for r in rt if (t := r.mean_tpot_s()) is not None]
    attained_in_window = sum(1 for r in records if r.attained() and (r.finish_s or math.inf) <= stats.arrivals_end_s)
    return {
        "num_requests": len(records),
        "num_completed": sum(1 for r in records if r.complete),
        # Over all RT requests: one the admission control rejected counts as a miss.
        "rt_slo_attainment": _frac(sum(r.rt_attained() for r in rt), len(rt)),
        **_admission_metrics(rt),
        "deadline_slo_attainment": _frac(sum(r.deadline_attained() for r in dl), len(dl)),
        "workflow_slo_attainment": workflow_attainment(records),
        "be_throughput_tok_s": None if not be else be_tokens / window,
        # Over the whole job: every BE token over first arrival -> last BE token (drain included).
        "be_throughput_run_tok_s": None if be_last is None else be_all_tokens / max(be_last - stats.start_s, 1e-9),
        "be_mean_completion_s": None if not be_done else sum(be_done) / len(be_done),
        "be_completed_fraction": _frac(len(be_done), len(be)),
        "service_gain": gain / window,
        # The whole run's gain: with workflows the window itself depends on the policy (a call is
        # released when its dependencies finish), so policies compare on this total.
        "service_gain_total": gain,
        "goodput_req_s": attained_in_window / window,
        "rt_ttft_p50_ms": _pct(ttfts, 0.50),
        "rt_ttft_p99_ms": _pct(ttfts, 0.99),
        "rt_tpot_p99_ms": _pct(tpots, 0.99),
        "preemptions": stats.preemptions,
        # Preemptions suffered, by the victim's class (every request's count, finished or not).
        "rt_preemptions": sum(r.num_preemptions for r in rt),
        "deadline_preemptions": sum(r.num_preemptions for r in dl),
        "be_preemptions": sum(r.num_preemptions for r in be),
        "be_preemptions_per_completed": None if not be else sum(r.num_preemptions for r in be) / max(be_completed, 1),
        "recomputed_tokens": None if recomputed is None else sum(recomputed.values()),
        "be_recomputed_tokens": None if recomputed is None else recomputed.get(BEST_EFFORT, 0),
        "rt_recomputed_tokens": None if recomputed is None else recomputed.get(REAL_TIME, 0),
        "be_prompt_tokens": sum(r.request.prompt_tokens for r in be),
        **(stats.checkpoint or {}), **(stats.prefix or {}),
        "kv_util_mean": stats.kv_util_mean,
        "num_steps": stats.num_steps,
        "window_s": window,
        "end_s": stats.end_s,
    }
