"""After a simulated run: every request finished with exactly its true length, no KV block leaked
or held twice, the core's ledger and the store's pool agree, and time never ran backwards."""

from __future__ import annotations

import pytest

from scheduler_svc.core import POLICY_NAMES
from scheduler_svc.sim.simulator import WORKER_ID, SimConfig, Simulation
from tests.sim.helpers import TEST_COST, mixed_workload


def _check_clean(sim: Simulation, result) -> None:
    sim.worker.settle(sim.clock.now())  # what the worker's syncs do within their interval once idle
    sim.worker.check_invariants()
    record = sim.leases.worker(WORKER_ID)
    assert record.leases == {}, f"leases left: {list(record.leases)[:5]}"
    assert record.pool.num_free == record.pool.num_blocks, "a KV block leaked in the store's pool"
    assert sim.core.ledger.num_free == sim.core.config.num_blocks, "the core's ledger leaked blocks"
    sim.core.ledger.check()
    assert not sim.core.has_unfinished_requests()
    assert sim.worker.num_requests == 0, "the worker kept state of finished requests"
    assert result.num_unfinished == 0
    for rec in result.records:
        assert rec.complete, f"{rec.request.id} did not complete ({len(rec.token_times)} tokens, {rec.finish_reason})"
        assert len(rec.token_times) == rec.request.output_tokens, f"{rec.request.id}: extra tokens leaked"
        assert rec.finish_reason == "stop"
        assert rec.token_times == sorted(rec.token_times) and rec.token_times[0] > rec.arrival_s


def _make(policy: str, **overrides: object) -> tuple[Simulation, object]:
    # A policy that fails to import fails these tests: every registered policy must keep the invariants.
    reqs = mixed_workload(seed=5, duration_s=8.0)
    sim = Simulation(reqs, policy, TEST_COST, SimConfig(**overrides))  # type: ignore[arg-type]
    return sim, sim.run()


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("depth", [1, 2])
def test_tight_kv_pool_preempts_and_still_finishes_everything(policy, depth):
    # 160 blocks x 16 tokens = 2,560 tokens of KV for tens of concurrent requests: forces preemption.
    sim, result = _make(policy, num_blocks=160, block_size=16, max_num_batched_tokens=512, max_num_seqs=32,
                        max_model_len=2560, pipeline_depth=depth, check_invariants_every=1)
    assert result.stats.preemptions > 0, "the tight pool should have forced preemptions"
    assert result.num_failed_steps == 0, "the core's ledger and the store disagreed (a lease was refused)"
    _check_clean(sim, result)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_roomy_pool_runs_clean(policy):
    sim, result = _make(policy, num_blocks=4000, pipeline_depth=2, check_invariants_every=25)
    assert result.stats.preemptions == 0
    _check_clean(sim, result)
    assert 0 < result.stats.kv_util_mean < 1


def test_workflow_calls_wait_for_their_dependencies():
    from scheduler_svc.sim.workload import WorkloadRequest

    reqs = [WorkloadRequest("a", 0.0, 100, 20, "deadline", deadline_ms=5000.0, workflow_id="w"),
            WorkloadRequest("b", 0.0, 100, 20, "deadline", deadline_ms=5000.0, workflow_id="w", depends_on=("a",),
                            think_s=1.5, stage=1, workflow_deadline_ms=20_000.0),
            WorkloadRequest("c", 0.0, 50, 5, "real_time", ttft_ms=500.0, tpot_ms=50.0)]
    sim = Simulation(reqs, "fcfs", TEST_COST, SimConfig(num_blocks=1000))
    result = sim.run()
    by_id = {r.request.id: r for r in result.records}
    assert by_id["b"].arrival_s == pytest.approx(by_id["a"].finish_s + 1.5)
    assert by_id["b"].token_times[0] > by_id["b"].arrival_s
    _check_clean(sim, result)


def test_a_request_too_long_for_the_context_fails_and_releases_its_dependents():
    from scheduler_svc.sim.workload import WorkloadRequest

    reqs = [WorkloadRequest("big", 0.0, 5000, 10, "best_effort", workflow_id="w"),
            WorkloadRequest("next", 0.0, 10, 3, "best_effort", workflow_id="w", depends_on=("big",), stage=1)]
    result = Simulation(reqs, "fcfs", TEST_COST, SimConfig(num_blocks=1000, max_model_len=2048)).run()
    big, nxt = result.records
    assert big.finish_reason == "error" and not big.complete
    assert nxt.complete and nxt.arrival_s == pytest.approx(0.0)
