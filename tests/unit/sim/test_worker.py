"""The simulated worker executes plans with worker_svc's plan book: leases held ahead and synced
with the kvstore core, releases before leasing, EOS at the true length, cost-model step time, and
(with a host tier) checkpoints and restores."""

from __future__ import annotations

import pytest

from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import StepErrorCode
from scheduler_svc.core import BatchPlan, NewRequestData, SamplingParams, ScheduledRequest, ServiceClass
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.host_tier import SimHostTier
from scheduler_svc.sim.worker import SimWorker

COST = CostModel(0.01, 1e-4, 1e-3, 1e-6)
EOS = 2


def _worker(num_blocks: int = 8, true: dict[str, int] | None = None) -> tuple[SimWorker, LeaseTable]:
    leases = LeaseTable(ttl_s=100.0)
    leases.register_pool("w", num_blocks, 4, 1, now=0.0)
    return SimWorker("w", leases, 4, COST, true or {"rt": 2, "be": 3}, EOS), leases


def _new(rid: str, n: int, cls: ServiceClass, outputs: int = 0) -> NewRequestData:
    return NewRequestData(rid, (5,) * n, n - outputs, SamplingParams(max_tokens=16), cls, outputs)


def test_prefill_then_decode_until_eos_at_true_length():
    worker, leases = _worker()
    plan = BatchPlan(0, (_new("rt", 6, ServiceClass.REAL_TIME), _new("be", 5, ServiceClass.BEST_EFFORT)),
                     (ScheduledRequest("rt", 6, 0, True), ScheduledRequest("be", 4, 0, False)))
    result, dt = worker.execute(plan, 0.0)
    assert result.sampled == (("rt", 7),)  # not EOS yet: the true length is 2
    assert dt == pytest.approx(COST.step_time(10, 0, 6 + 4))
    assert result.timing.num_prefill_tokens == 10 and result.timing.num_decode_seqs == 0
    # Real-time from the low end of the pool, best-effort from the high end; the store learns it
    # in a batch (at once here: the first step found nothing held ahead).
    assert (worker.keeper.blocks("rt"), worker.keeper.blocks("be")) == ((0, 1), (7,))
    worker.settle(0.0)
    assert leases.lease("w", "rt").block_ids == [0, 1]
    assert leases.lease("w", "be").block_ids == [7]
    result, dt = worker.execute(BatchPlan(1, (), (ScheduledRequest("rt", 1, 6, True), ScheduledRequest("be", 1, 4, True))), dt)
    assert result.sampled == (("rt", EOS), ("be", 7))
    assert result.timing.num_decode_seqs == 1 and result.timing.num_prefill_tokens == 1
    worker.check_invariants()


def test_finished_ids_are_released_before_new_leases():
    worker, leases = _worker(num_blocks=3)
    worker.execute(BatchPlan(0, (_new("rt", 8, ServiceClass.REAL_TIME),), (ScheduledRequest("rt", 8, 0, True),)), 0.0)
    assert worker.keeper.num_held == 2 and worker.keeper.num_reserved == 1  # the third, held ahead
    # "be" needs 3 blocks: only possible because "rt" is released first in the same step.
    result, _ = worker.execute(BatchPlan(1, (_new("be", 9, ServiceClass.BEST_EFFORT),), (ScheduledRequest("be", 9, 0, True),),
                                         finished_request_ids=("rt",)), 1.0)
    assert not result.error and len(worker.keeper.blocks("be")) == 3
    worker.settle(1.0)
    assert leases.lease("w", "rt") is None and len(leases.lease("w", "be").block_ids) == 3
    worker.check_invariants()


def test_refused_lease_fails_the_step_and_its_releases_stand():
    worker, leases = _worker(num_blocks=2)
    worker.execute(BatchPlan(0, (_new("rt", 4, ServiceClass.REAL_TIME),), (ScheduledRequest("rt", 4, 0, True),)), 0.0)
    plan = BatchPlan(1, (_new("be", 12, ServiceClass.BEST_EFFORT),), (ScheduledRequest("be", 12, 0, True),),
                     finished_request_ids=("rt",))
    result, dt = worker.execute(plan, 1.0)
    assert "KV lease refused" in result.error and dt == 0.0 and result.sampled == ()
    assert result.error_code is StepErrorCode.KV_REFUSED
    # As with the real store, the refused sync changed nothing there; the worker dropped "be"
    # (the planner recomputes it), and rt's block went back to the blocks it holds ahead.
    assert worker.num_requests == 0 and (worker.keeper.num_held, worker.keeper.num_reserved) == (0, 2)
    worker.check_invariants()
    result, _ = worker.execute(BatchPlan(2), 2.0)
    worker.settle(2.0)  # idle: the reserve goes back to the store
    assert not result.error and leases.worker("w").pool.num_free == 2
    worker.check_invariants()


def test_inconsistent_computed_count_fails_the_step():
    worker, _ = _worker()
    worker.execute(BatchPlan(0, (_new("rt", 4, ServiceClass.REAL_TIME),), (ScheduledRequest("rt", 4, 0, True),)), 0.0)
    result, _ = worker.execute(BatchPlan(1, (), (ScheduledRequest("rt", 1, 3, True),)), 1.0)
    assert "plan says num_computed_tokens=3, worker has 4" in result.error
    assert result.error_code is StepErrorCode.INVALID_PLAN


def test_resumed_request_counts_outputs_from_before_the_preemption():
    worker, _ = _worker(true={"be": 3})
    # Re-admitted with 2 outputs already sampled: the next sample is its 3rd and last token.
    plan = BatchPlan(0, (_new("be", 7, ServiceClass.BEST_EFFORT, outputs=2),), (ScheduledRequest("be", 7, 0, True),))
    result, _ = worker.execute(plan, 0.0)
    assert result.sampled == (("be", EOS),)


def _tier_worker(capacity_blocks: int, num_blocks: int = 16) -> tuple[SimWorker, LeaseTable, SimHostTier]:
    leases = LeaseTable(ttl_s=100.0)
    leases.register_pool("w", num_blocks, 4, 1, now=0.0)
    # 1 KiB per token, 4 tokens a block: 4 KiB blocks over a 4 MB/s link (1 ms a block).
    tier = SimHostTier(4, 1024, capacity_bytes=capacity_blocks * 4096, link_bytes_per_s=4096e3, lazy=False)
    return SimWorker("w", leases, 4, COST, {"a": 50, "b": 50}, EOS, host_tier=tier), leases, tier


def test_a_checkpointed_request_resumes_from_the_host_tier_and_is_charged_the_copies():
    worker, leases, tier = _tier_worker(capacity_blocks=8)
    worker.execute(BatchPlan(0, (_new("a", 6, ServiceClass.BEST_EFFORT),), (ScheduledRequest("a", 6, 0, True),)), 0.0)
    # Preempted by checkpoint: its 6 computed tokens (2 blocks) go to the tier, 2 ms of copy.
    result, dt = worker.execute(BatchPlan(1, preempted_request_ids=("a",), checkpoint_request_ids=("a",)), 1.0)
    assert not result.error and tier.tier == {"a": 6} and dt == pytest.approx(0.002)
    worker.settle(1.0)
    assert leases.worker("w").pool.num_free == 16 and worker.num_requests == 0
    # Resumed with 7 known tokens, 6 of them restored: only the last one is computed (a decode).
    resumed = NewRequestData("a", (5,) * 7, 6, SamplingParams(max_tokens=16), ServiceClass.BEST_EFFORT, 1, 6)
    result, dt = worker.execute(BatchPlan(2, (resumed,), (ScheduledRequest("a", 1, 6, True),)), 2.0)
    assert result.restore_failed_request_ids == () and result.sampled == (("a", 7),)
    assert (result.timing.num_prefill_tokens, result.timing.num_decode_seqs, result.timing.num_kv_tokens_read) == (0, 1, 7)
    assert dt == pytest.approx(COST.step_time(0, 1, 7) + 0.002)
    assert (tier.stats.num_checkpoints, tier.stats.num_restores, tier.stats.bytes_restored) == (1, 1, 8192)
    worker.check_invariants()


def test_a_refused_checkpoint_is_reported_and_its_restore_recomputes_inside_the_step():
    worker, _, tier = _tier_worker(capacity_blocks=1)
    worker.execute(BatchPlan(0, (_new("b", 6, ServiceClass.BEST_EFFORT),), (ScheduledRequest("b", 6, 0, True),)), 0.0)
    result, _ = worker.execute(BatchPlan(1, preempted_request_ids=("b",), checkpoint_request_ids=("b",)), 1.0)
    assert result.checkpoint_failed_request_ids == ("b",) and tier.stats.num_refusals == 1 and not tier.tier
    resumed = NewRequestData("b", (5,) * 7, 6, SamplingParams(max_tokens=16), ServiceClass.BEST_EFFORT, 1, 6)
    result, dt = worker.execute(BatchPlan(2, (resumed,), (ScheduledRequest("b", 1, 6, True),)), 2.0)
    assert result.restore_failed_request_ids == ("b",) and result.timing.num_recomputed_tokens == 6
    assert (result.timing.num_prefill_tokens, result.timing.num_decode_seqs) == (7, 0)  # from 0: all prefill
    assert dt == pytest.approx(COST.step_time(7, 0, 7)) and tier.stats.recomputed_tokens == 6
    worker.check_invariants()
    worker.execute(BatchPlan(3, finished_request_ids=("b",), drop_checkpoint_request_ids=("b",)), 3.0)
    assert worker.num_requests == 0 and tier.used_bytes == 0
