"""SLO attainment, latency percentiles and service gain on hand-built records."""

from __future__ import annotations

import pytest

from scheduler_svc.sim.metrics import RequestRecord, RunStats, summarize, workflow_attainment
from scheduler_svc.sim.service_gain import BEST_EFFORT_WEIGHT, PENALTY, W_DECODE, service_gain
from scheduler_svc.sim.workload import WorkloadRequest

STATS = RunStats(start_s=0.0, arrivals_end_s=10.0, end_s=20.0, num_steps=5, preemptions=2, kv_util_mean=0.5)


def rt(rid: str, times: list[float], out: int = 3, finish: float | None = None, arrival: float = 0.0) -> RequestRecord:
    req = WorkloadRequest(rid, arrival, 10, out, "real_time", ttft_ms=1000.0, tpot_ms=100.0)
    return RequestRecord(req, arrival, list(times), finish if finish is not None else (times[-1] if times else None),
                         "stop" if times else "")


def test_rt_attainment_is_per_token():
    on_time = rt("a", [1.0, 1.1, 1.2])  # exactly on each deadline
    late_first = rt("b", [1.01, 1.05, 1.1])
    late_third = rt("c", [0.5, 0.6, 1.3])  # token 2 due at 1.2
    short = rt("d", [0.1, 0.2], out=3)  # never got its last token
    assert [r.rt_attained() for r in (on_time, late_first, late_third, short)] == [True, False, False, False]
    m = summarize([on_time, late_first, late_third, short], STATS, service_gain)
    assert m["rt_slo_attainment"] == 0.25
    assert m["deadline_slo_attainment"] is None and m["be_throughput_tok_s"] is None


def test_deadline_and_best_effort_metrics():
    dl_ok = RequestRecord(WorkloadRequest("d1", 1.0, 5, 2, "deadline", deadline_ms=2000.0), 1.0, [2.0, 3.0], 3.0, "stop")
    dl_late = RequestRecord(WorkloadRequest("d2", 1.0, 5, 2, "deadline", deadline_ms=2000.0), 1.0, [2.0, 3.5], 3.5, "stop")
    be_a = RequestRecord(WorkloadRequest("b1", 0.0, 5, 4, "best_effort"), 0.0, [1, 2, 3, 11], 11.0, "stop")
    be_b = RequestRecord(WorkloadRequest("b2", 0.0, 5, 4, "best_effort"), 0.0, [5, 6], None, "")
    m = summarize([dl_ok, dl_late, be_a, be_b], STATS, service_gain)
    assert m["deadline_slo_attainment"] == 0.5
    # BE tokens inside the 10 s offered-load window: 3 + 2.
    assert m["be_throughput_tok_s"] == pytest.approx(0.5)
    assert m["be_mean_completion_s"] == 11.0 and m["be_completed_fraction"] == 0.5
    assert m["preemptions"] == 2 and m["kv_util_mean"] == 0.5


def test_ttft_percentiles_are_censored_at_the_end():
    served = [rt(f"r{i}", [0.1 * (i + 1), 5.0, 5.1]) for i in range(9)]
    starved = rt("s", [], finish=None)
    m = summarize([*served, starved], STATS, service_gain)
    assert m["rt_ttft_p99_ms"] > 15_000  # the starved one counts with end - arrival = 20 s
    assert m["rt_ttft_p50_ms"] == pytest.approx(550.0)


def test_workflow_attainment_and_gain_judge_the_whole_workflow():
    def call(rid: str, arrival: float, finish: float, deps: tuple[str, ...] = ()) -> RequestRecord:
        req = WorkloadRequest(rid, arrival, 4, 2, "deadline", deadline_ms=100_000.0, workflow_id=rid[0],
                              depends_on=deps, workflow_deadline_ms=5000.0)
        return RequestRecord(req, arrival, [finish - 0.1, finish], finish, "stop")

    ok = [call("a1", 0.0, 1.0), call("a2", 2.0, 4.9, ("a1",))]
    late = [call("b1", 0.0, 1.0), call("b2", 2.0, 10.0, ("b1",))]  # latency 10 s for a 5 s deadline
    assert workflow_attainment(ok + late) == 0.5
    full = 4 + W_DECODE * 2
    assert service_gain(ok, 20.0) == pytest.approx(2 * full)
    assert service_gain(late, 20.0) == pytest.approx(2 * full * 0.5**PENALTY)


def test_rt_gain_decays_with_lateness():
    on_time = rt("a", [0.5, 1.05, 1.2])
    assert service_gain([on_time], 20.0) == pytest.approx(10 + 3 * W_DECODE)
    # Token 2 is due at 1.2 s and arrives at 2.4 s: it earns (1.2 / 2.4)^p of its weight.
    late_token = rt("b", [0.5, 1.05, 2.4])
    assert service_gain([late_token], 20.0) == pytest.approx(10 + 2 * W_DECODE + W_DECODE * 0.5**PENALTY)
    assert service_gain([rt("c", [], finish=None)], 20.0) == 0.0


def test_deadline_and_best_effort_gain():
    dl = RequestRecord(WorkloadRequest("d", 0.0, 5, 2, "deadline", deadline_ms=2000.0), 0.0, [1.0, 4.0], 4.0, "stop")
    be = RequestRecord(WorkloadRequest("b", 0.0, 5, 2, "best_effort"), 0.0, [1.0, 9.0], 9.0, "stop")
    assert service_gain([dl], 20.0) == pytest.approx((5 + 2 * W_DECODE) * 0.5**PENALTY)
    assert service_gain([be], 20.0) == pytest.approx(BEST_EFFORT_WEIGHT * (5 + 2 * W_DECODE))
