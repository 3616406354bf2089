"""Workflow release (dependencies + think time) and the bench's workload transforms."""

from __future__ import annotations

from scheduler_svc.sim import transform
from scheduler_svc.sim.release import ReleaseTracker
from scheduler_svc.sim.workload import WorkloadRequest


def _req(rid: str, t: float, deps: tuple[str, ...] = (), think: float = 0.0, stage: int = 0) -> WorkloadRequest:
    return WorkloadRequest(rid, t, 10, 5, "deadline", deadline_ms=1000.0, workflow_id="w" if deps or stage == 0 else None,
                           depends_on=deps, think_s=think, stage=stage)


def test_dependents_release_after_all_dependencies_plus_think_time():
    reqs = [_req("a", 0.0), _req("b", 0.5), _req("c", 1.0, ("a", "b"), think=2.0, stage=1), _req("d", 0.0, ("c",), 0.5, 2)]
    tracker = ReleaseTracker(reqs)
    assert [(t, r.id) for t, r in tracker.initial()] == [(0.0, "a"), (0.5, "b")]
    assert tracker.finished("a", 3.0) == []
    ready = tracker.finished("b", 4.0)
    assert [(t, r.id) for t, r in ready] == [(6.0, "c")]  # max(3, 4) + 2
    assert [(t, r.id) for t, r in tracker.finished("c", 7.0)] == [(7.5, "d")]
    assert tracker.num_blocked == 0


def test_first_requests_drops_calls_whose_dependencies_were_cut():
    reqs = [_req("a", 0.0), _req("b", 1.0, ("a",), stage=1), _req("x", 2.0), _req("c", 3.0, ("b",), stage=2),
            _req("y", 0.5)]
    kept = transform.first_requests(reqs, 3)  # a, y, b by arrival
    assert [r.id for r in kept] == ["a", "y", "b"]
    cut = transform.first_requests([_req("b", 0.0, ("a",), stage=1), _req("a", 1.0)], 1)
    assert cut == []


def test_stretch_and_rate_scale():
    r = WorkloadRequest("r", 2.0, 10, 5, "real_time", ttft_ms=100.0, tpot_ms=10.0, think_s=1.0)
    [s] = transform.stretch_time([r], 10.0)
    assert (s.arrival_s, s.think_s, s.ttft_ms, s.tpot_ms) == (20.0, 10.0, 1000.0, 100.0)
    [f] = transform.scale_rate([r], 4.0)
    assert (f.arrival_s, f.ttft_ms, f.think_s) == (0.5, 100.0, 1.0)
    [c] = transform.cap_lengths([r], 4, 2)
    assert (c.prompt_tokens, c.output_tokens) == (4, 2)
