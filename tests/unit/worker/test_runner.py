"""The step runner's contract: plan validation (clear errors, nothing changed), block needs per
step, releases, failed steps (abort) and stream close (reset), and sampling that resumes
identically after a recompute preemption."""

from __future__ import annotations

import pytest

from llmserve.model_source import resolve_model
from llmserve.plan import BatchPlan, Grant, NewRequest, ScheduledRequest
from llmserve.plan_book import PlanError
from llmserve.types import SamplingParams, ServiceClass
from tests.unit.worker.helpers import LocalBlockPool, make_runner, run_step
from worker_svc.kernels.backend import make_backend
from worker_svc.model.loader import load_model

RT, BE = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT


@pytest.fixture(scope="module")
def model(tiny_checkpoints):
    return load_model(resolve_model(str(tiny_checkpoints["llama"][0])), make_backend("torch"))


def new(rid: str, n: int, cls: ServiceClass = BE, sampling: SamplingParams | None = None, outputs: int = 0) -> NewRequest:
    tokens = tuple((7 * i + len(rid)) % 96 for i in range(n))
    return NewRequest(rid, tokens, n - outputs, sampling or SamplingParams(max_tokens=16, temperature=0.0), cls,
                      num_output_tokens=outputs)


def sched(rid: str, n: int, computed: int, sample: bool = True) -> ScheduledRequest:
    return ScheduledRequest(rid, n, computed, sample)


def test_block_needs_releases_and_timing(model) -> None:
    runner, pool = make_runner(model, num_blocks=32, block_size=4, max_tokens=64), LocalBlockPool(32)
    delta = runner.begin_step(BatchPlan(0, (new("a", 9), new("b", 3, RT)), (sched("a", 6, 0, False), sched("b", 3, 0))))
    assert delta.release_request_ids == ()
    assert [(lease.request_id, lease.service_class, lease.num_blocks) for lease in delta.leases] == [("a", BE, 2), ("b", RT, 1)]
    out = runner.finish_step(pool.apply(delta))
    assert [rid for rid, _ in out.sampled] == ["b"]
    assert (out.timing.num_prefill_tokens, out.timing.num_decode_seqs, out.timing.num_kv_tokens_read) == (9, 0, 9)
    # a's last 3 prompt tokens fit in 1 new block; b's decode (token 4) fits its first block.
    delta = runner.begin_step(BatchPlan(1, (), (sched("b", 1, 3), sched("a", 3, 6))))
    assert [(lease.request_id, lease.num_blocks) for lease in delta.leases] == [("a", 1)]
    out = runner.finish_step(pool.apply(delta))
    assert (out.timing.num_prefill_tokens, out.timing.num_decode_seqs, out.timing.num_kv_tokens_read) == (3, 1, 13)
    assert [rid for rid, _ in out.sampled] == ["b", "a"]  # plan order, though decodes run first
    delta = runner.begin_step(BatchPlan(2, (), (sched("a", 1, 9),), finished_request_ids=("b",)))
    assert delta.release_request_ids == ("b",) and delta.leases == ()
    run_step_output = runner.finish_step(pool.apply(delta))
    assert runner.request_ids == ("a",) and len(run_step_output.sampled) == 1
    assert (len(runner.state("a").token_ids), runner.state("a").num_computed) == (11, 10)  # 9 prompt + 2 sampled


@pytest.mark.parametrize(
    "plan, message",
    [  # the book's full table is tests/unit/plan_book/test_book.py; these are the runner's own limits
        (BatchPlan(0, (), (sched("ghost", 1, 0),)), "unknown to this worker"),
        (BatchPlan(0, (new("a", 80),), (sched("a", 80, 0),)), "exceed max_num_batched_tokens 64"),
        (BatchPlan(0, (NewRequest("a", (1, 500), 2, SamplingParams(max_tokens=16), BE),), ()), "token id 500 >= vocab size 96"),
        (BatchPlan(0, (NewRequest("a", (1,) * 300, 300, SamplingParams(max_tokens=16), BE, num_computed_tokens=250),),
                   (sched("a", 10, 250, False),)), "260 tokens exceed the model's max length 256"),
    ],
)
def test_invalid_plans_are_rejected_without_side_effects(model, plan: BatchPlan, message: str) -> None:
    runner = make_runner(model, max_tokens=64)
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace("]", r"\]")):
        runner.begin_step(plan)
    assert runner.request_ids == ()
    assert runner.begin_step(BatchPlan(1)).empty  # the runner is still usable
    assert runner.finish_step([]).sampled == ()


def test_new_request_for_a_running_id_is_rejected(model) -> None:
    runner, pool = make_runner(model), LocalBlockPool(64)
    run_step(runner, pool, BatchPlan(0, (new("a", 4),), (sched("a", 4, 0),)))
    with pytest.raises(PlanError, match="already running"):
        runner.begin_step(BatchPlan(1, (new("a", 4),), ()))
    # Preempting it in the same plan makes the re-admission legal.
    delta = runner.begin_step(BatchPlan(1, (new("a", 6),), (sched("a", 6, 0),), preempted_request_ids=("a",)))
    assert delta.release_request_ids == ("a",) and delta.leases[0].num_blocks == 2


def test_grants_must_answer_the_leases(model) -> None:
    runner = make_runner(model, num_blocks=8)
    runner.begin_step(BatchPlan(0, (new("a", 5),), (sched("a", 5, 0),)))
    with pytest.raises(PlanError, match="does not answer"):
        runner.finish_step([Grant("a", (1,))])
    runner.abort_step(kv_applied=True)
    runner.begin_step(BatchPlan(1, (new("b", 5),), (sched("b", 5, 0),)))
    with pytest.raises(PlanError, match="outside this worker's 8 blocks"):
        runner.finish_step([Grant("b", (3, 8))])


def test_abort_drops_the_steps_requests_and_releases_them_next_time(model) -> None:
    runner, pool = make_runner(model), LocalBlockPool(64)
    run_step(runner, pool, BatchPlan(0, (new("a", 4), new("b", 4)), (sched("a", 4, 0), sched("b", 4, 0))))
    # Step 1 finishes b and schedules a; its Apply is refused (never applied).
    runner.begin_step(BatchPlan(1, (new("c", 3),), (sched("a", 1, 4), sched("c", 3, 0)), finished_request_ids=("b",)))
    assert set(runner.abort_step(kv_applied=False)) == {"a", "c"}
    assert runner.request_ids == ()
    delta = runner.begin_step(BatchPlan(2))
    assert set(delta.release_request_ids) == {"a", "b", "c"}  # b's release was never applied
    runner.finish_step(pool.apply(delta))
    assert pool.num_used == 0
    # After a step whose Apply went through, the step's own releases are not repeated.
    run_step(runner, pool, BatchPlan(3, (new("d", 4),), (sched("d", 4, 0),)))
    pool.apply(runner.begin_step(BatchPlan(4, (new("e", 4),), (sched("e", 4, 0),), finished_request_ids=("d",))))
    runner.abort_step(kv_applied=True)
    assert runner.begin_step(BatchPlan(5)).release_request_ids == ("e",)


def test_reset_returns_every_request_to_release(model) -> None:
    runner, pool = make_runner(model), LocalBlockPool(64)
    run_step(runner, pool, BatchPlan(0, (new("a", 4), new("b", 4)), (sched("a", 4, 0), sched("b", 2, 0, False))))
    runner.begin_step(BatchPlan(1, (), (), finished_request_ids=("a",)))  # open step: a's release pending
    assert set(runner.reset()) == {"a", "b"} and runner.request_ids == ()


def test_recompute_preemption_resumes_the_same_random_tokens(model) -> None:
    sampling = SamplingParams(max_tokens=16, temperature=1.0, top_k=20, seed=77)
    runner, pool = make_runner(model), LocalBlockPool(64)
    run_step(runner, pool, BatchPlan(0, (new("a", 6, sampling=sampling),), (sched("a", 6, 0),)))
    for i in range(9):
        run_step(runner, pool, BatchPlan(i + 1, (), (sched("a", 1, 6 + i),)))
    uninterrupted = runner.state("a").token_ids[6:]
    assert len(uninterrupted) == 10 and len(set(uninterrupted)) > 1
    # Another worker: 4 tokens, then preempted, re-admitted with prompt + 4 outputs, 6 more.
    other, pool2 = make_runner(model), LocalBlockPool(64, seed=1)
    run_step(other, pool2, BatchPlan(0, (new("a", 6, sampling=sampling),), (sched("a", 6, 0),)))
    for i in range(3):
        run_step(other, pool2, BatchPlan(i + 1, (), (sched("a", 1, 6 + i),)))
    known = tuple(other.state("a").token_ids)
    resumed = NewRequest("a", known, 6, sampling, BE, num_output_tokens=4)
    run_step(other, pool2, BatchPlan(4, (resumed,), (sched("a", 10, 0),), preempted_request_ids=("a",)))
    for i in range(5):
        run_step(other, pool2, BatchPlan(5 + i, (), (sched("a", 1, 10 + i),)))
    assert other.state("a").token_ids[6:] == uninterrupted


def test_a_failed_restore_scheduled_as_one_token_is_batched_as_the_prefill_it_becomes(model) -> None:
    """A resumed request whose checkpoint is gone recomputes its prefix in the step: its 1-token
    chunk becomes a 6-token prefill, which must not be batched among the decodes."""
    sampling = SamplingParams(max_tokens=16, temperature=1.0, seed=3)
    runner, pool = make_runner(model), LocalBlockPool(64)
    run_step(runner, pool, BatchPlan(0, (new("a", 4), new("b", 4)), (sched("a", 4, 0), sched("b", 4, 0))))
    tokens = tuple((5 * i + 1) % 96 for i in range(6))
    resumed = NewRequest("r", tokens, 5, sampling, BE, num_output_tokens=1, num_computed_tokens=5)
    out = run_step(runner, pool, BatchPlan(1, (resumed,), (sched("r", 1, 5), sched("a", 1, 4), sched("b", 1, 4))))
    assert out.restore_failed_request_ids == ("r",) and out.timing.num_recomputed_tokens == 5
    assert (out.timing.num_prefill_tokens, out.timing.num_decode_seqs) == (6, 2)
    # The same token as a worker that never had a checkpoint to restore.
    clean, pool2 = make_runner(model), LocalBlockPool(64, seed=1)
    fresh = NewRequest("r", tokens, 5, sampling, BE, num_output_tokens=1)
    assert run_step(clean, pool2, BatchPlan(0, (fresh,), (sched("r", 6, 0),))).sampled == out.sampled[:1]

