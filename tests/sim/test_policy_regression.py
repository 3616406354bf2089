"""One regression test per policy: a small seeded, overloaded RT + deadline + BE workload through
the simulator, with loose bounds that catch a policy that stopped doing its job.

At this load (RT 24 req/s, BE 8 req/s on the test cost model) FCFS queues RT requests behind BE
prefills and misses most RT SLOs; the SLO-aware policies must not.
"""

from __future__ import annotations

import functools

from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain
from scheduler_svc.sim.simulator import SimConfig, simulate
from tests.sim.helpers import TEST_COST, mixed_workload

CONFIG = SimConfig(num_blocks=3000, max_num_batched_tokens=1024, max_num_seqs=64, max_model_len=4096)


@functools.cache
def run(policy: str) -> dict:
    reqs = mixed_workload(seed=1, duration_s=20.0, rt_rate=24.0, be_rate=8.0)
    result = simulate(reqs, policy, TEST_COST, CONFIG)  # an import error of the policy fails the test
    assert result.num_unfinished == 0 and result.num_failed_steps == 0
    return summarize(result.records, result.stats, service_gain)


def test_fcfs_misses_rt_slos_under_overload():
    m = run("fcfs")
    assert m["rt_slo_attainment"] < 0.5
    assert m["be_throughput_tok_s"] > 300
    assert m["num_completed"] == m["num_requests"]


def test_priority_serves_rt_first():
    m, base = run("priority"), run("fcfs")
    assert m["rt_slo_attainment"] > 0.85
    assert m["rt_ttft_p50_ms"] < base["rt_ttft_p50_ms"] / 5
    assert m["be_throughput_tok_s"] > 0.5 * base["be_throughput_tok_s"]


def test_edf_meets_deadlines_better_than_fcfs():
    m, base = run("edf"), run("fcfs")
    assert m["rt_slo_attainment"] > 0.85
    assert m["deadline_slo_attainment"] >= base["deadline_slo_attainment"]


def test_bros_keeps_rt_slos_and_most_be_throughput():
    m, base = run("bros"), run("fcfs")
    assert m["rt_slo_attainment"] > 0.85
    assert m["be_throughput_tok_s"] > 0.6 * base["be_throughput_tok_s"]


def test_tempo_gains_more_service_than_fcfs():
    m, base = run("tempo"), run("fcfs")
    assert m["service_gain"] > 1.2 * base["service_gain"]
    assert m["rt_slo_attainment"] > base["rt_slo_attainment"]
