"""One regression test per policy: a small seeded, overloaded RT + deadline + BE workload through
the simulator, with loose bounds that catch a policy that stopped doing its job.

At this load (RT 24 req/s, BE 8 req/s on the test cost model) FCFS queues RT requests behind BE
prefills and misses most RT SLOs; the SLO-aware policies must not.
"""

from __future__ import annotations

import functools

import pytest

from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain
from scheduler_svc.sim.simulator import SimConfig, simulate
from scheduler_svc.sim.workloads.build import BuildConfig, StreamSpec, build_workload
from scheduler_svc.sim.workloads.slo import SloSpec
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


# ---- issue 9: a tight TPOT tier, 2k-token BE prompts, the service's defaults (2 plans in flight,
# checkpoint preemption, the cost model learnt online). FCFS fills every step past the 40 ms TPOT
# and its long BE prompts are recomputed; the fixes keep bros and tempo's streams on pace, their
# victims few and checkpointed, and their deadline class at least at edf's.
TIGHT = SimConfig(num_blocks=3000, max_num_batched_tokens=1024, max_num_seqs=64, max_model_len=4096)


@functools.cache
def run_tight(policy: str) -> dict:
    cfg = BuildConfig(duration_s=20.0, seed=3, slo=SloSpec(ttft_ms=500, tpot_ms=40, deadline_ms=4000, tiers=1),
                      max_prompt_tokens=3072, max_output_tokens=400)
    reqs = build_workload([
        StreamSpec.parse("synthetic:real_time:rate=24,prompt_mean=300,output_mean=80,process=gamma,cv=2"),
        StreamSpec.parse("synthetic:deadline:rate=2,prompt_mean=600,output_mean=40"),
        StreamSpec.parse("synthetic:best_effort:rate=4,prompt_mean=2000,output_mean=200")], cfg)
    result = simulate(reqs, policy, TEST_COST, TIGHT)
    assert result.num_unfinished == 0 and result.num_failed_steps == 0
    return summarize(result.records, result.stats, service_gain)


def test_tight_tier_fcfs_misses_rt_and_recomputes_be():
    m = run_tight("fcfs")
    assert m["rt_slo_attainment"] < 0.2
    assert m["be_recomputed_tokens"] > 0.05 * m["be_prompt_tokens"]


def test_tight_tier_priority_serves_rt_first():
    assert run_tight("priority")["rt_slo_attainment"] > run_tight("fcfs")["rt_slo_attainment"] + 0.2


def test_tight_tier_edf_meets_more_deadlines_than_fcfs():
    assert run_tight("edf")["deadline_slo_attainment"] > run_tight("fcfs")["deadline_slo_attainment"]


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_tight_tier_slo_policies_keep_rt_on_pace_and_be_almost_free(policy):
    m, fcfs, edf, priority = run_tight(policy), run_tight("fcfs"), run_tight("edf"), run_tight("priority")
    assert m["rt_slo_attainment"] > 0.6
    assert m["rt_slo_attainment"] > max(priority["rt_slo_attainment"], edf["rt_slo_attainment"]) + 0.2
    assert m["deadline_slo_attainment"] >= edf["deadline_slo_attainment"]
    assert m["be_throughput_run_tok_s"] >= 0.9 * fcfs["be_throughput_run_tok_s"]
    assert m["be_preemptions_per_completed"] <= 0.3
    assert m["be_recomputed_tokens"] <= 0.01 * m["be_prompt_tokens"]
