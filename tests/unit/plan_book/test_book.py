"""The plan book on its own (no model, no store): validation with the planner-facing messages,
drops before admission, block deltas, restores (a failed one recomputes from 0), the one decode
rule in the token accounting, commit, abort carries and reset. The runner, the simulated worker
and the tests' fake worker all apply plans through it."""

from __future__ import annotations

import pytest

from llmserve.plan import BatchPlan, Grant, KvDelta, NewRequest, RestoreSpec, ScheduledRequest
from llmserve.plan_book import PlanBook, PlanError, PlanLimits
from llmserve.types import SamplingParams, ServiceClass, derive_seed

RT, BE = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT
LIMITS = PlanLimits(max_num_batched_tokens=64, max_num_seqs=4, max_model_len=100, vocab_size=96, num_blocks=32)


class Blocks:
    """Grants block ids in order, like a store with a free list."""

    def __init__(self) -> None:
        self.next_id = 0
        self.held: dict[str, list[int]] = {}

    def apply(self, delta: KvDelta) -> list[Grant]:
        for rid in delta.release_request_ids:
            self.held.pop(rid, None)
        grants = []
        for lease in delta.leases:
            ids = tuple(range(self.next_id, self.next_id + lease.num_blocks))
            self.next_id += lease.num_blocks
            self.held.setdefault(lease.request_id, []).extend(ids)
            grants.append(Grant(lease.request_id, ids))
        return grants


def new(rid: str, n: int, cls: ServiceClass = BE, outputs: int = 0, computed: int = 0, seed: int | None = 5,
        trace: tuple[tuple[str, str], ...] = ()) -> NewRequest:
    return NewRequest(rid, tuple(range(1, n + 1)), n - outputs, SamplingParams(max_tokens=8, seed=seed), cls,
                      outputs, computed, trace)


def sched(rid: str, n: int, computed: int, sample: bool = True) -> ScheduledRequest:
    return ScheduledRequest(rid, n, computed, sample)


def begin(book: PlanBook, plan: BatchPlan) -> KvDelta:
    book.drop(plan)
    return book.admit(plan)


def run(book: PlanBook, blocks: Blocks, plan: BatchPlan, token: int = 7):
    book.grant(blocks.apply(begin(book, plan)))
    work = book.work()
    return book.commit(lambda state: token), work


def test_new_requests_lease_the_blocks_their_chunk_needs_with_class_and_trace() -> None:
    book = PlanBook(4, LIMITS)
    delta = begin(book, BatchPlan(0, (new("a", 10, trace=(("traceparent", "t"),)), new("b", 3, RT)),
                                  (sched("a", 6, 0, False), sched("b", 3, 0))))
    # a: 6 tokens need cdiv(6, 4) = 2 blocks; b: 3 tokens need 1; real-time keeps its class.
    assert [(s.request_id, s.service_class, s.num_blocks, s.trace_context) for s in delta.leases] == [
        ("a", BE, 2, (("traceparent", "t"),)), ("b", RT, 1, ())]
    assert delta.release_request_ids == () and delta.restores == ()


def test_a_chunk_inside_held_blocks_leases_nothing_and_drops_release_first() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    run(book, blocks, BatchPlan(0, (new("a", 5), new("b", 3)), (sched("a", 5, 0), sched("b", 3, 0))))
    # a decodes token 6 (fits its 2nd block); b is finished; "ghost" was never here.
    delta = begin(book, BatchPlan(1, (), (sched("a", 1, 5),), finished_request_ids=("b", "ghost")))
    assert delta.release_request_ids == ("b", "ghost") and delta.leases == ()
    assert book.request_ids == ("a",)


@pytest.mark.parametrize(
    "plan, message",
    [
        (BatchPlan(0, (), (sched("ghost", 1, 0),)), "scheduled request ghost is unknown to this worker"),
        (BatchPlan(0, (new("a", 4),), (sched("a", 4, 1),)), "num_computed_tokens=1, worker has 0"),
        (BatchPlan(0, (new("a", 4),), (sched("a", 5, 0),)), "only 4 tokens are known"),
        (BatchPlan(0, (new("a", 4),), (sched("a", 3, 0, True),)), "sample=true but the chunk ends at 3"),
        (BatchPlan(0, (new("a", 4),), (sched("a", 0, 0, False),)), "num_tokens must be >= 1"),
        (BatchPlan(0, (new("a", 4), new("a", 4)), ()), "listed twice"),
        (BatchPlan(0, (new("a", 4),), (sched("a", 2, 0, False), sched("a", 2, 0, False))), "scheduled twice"),
        (BatchPlan(0, (new("a", 80),), (sched("a", 80, 0),)), "exceed max_num_batched_tokens 64"),
        (BatchPlan(0, tuple(new(f"r{i}", 2) for i in range(5)), tuple(sched(f"r{i}", 2, 0) for i in range(5))),
         "5 scheduled requests exceed max_num_seqs 4"),
        (BatchPlan(0, (NewRequest("a", (1, 500), 2, SamplingParams(max_tokens=1), BE),), ()),
         "token id 500 >= vocab size 96"),
        (BatchPlan(0, (NewRequest("a", (1, 2), 3, SamplingParams(max_tokens=1), BE),), ()),
         "num_prompt_tokens 3 not in [1, 2]"),
        (BatchPlan(0, (NewRequest("", (1,), 1, SamplingParams(max_tokens=1), BE),), ()), "empty request_id"),
        (BatchPlan(0, (new("a", 4, computed=4),), ()), "num_computed_tokens 4 to restore must be below"),
        (BatchPlan(0, checkpoint_request_ids=("x",)), "in checkpoint_request_ids but not in preempted"),
    ],
)
def test_invalid_plans_are_rejected_with_what_the_planner_got_wrong(plan: BatchPlan, message: str) -> None:
    book = PlanBook(4, LIMITS)
    book.drop(plan)
    with pytest.raises(PlanError) as err:
        book.admit(plan)
    assert message in str(err.value)
    assert book.request_ids == () and book.open_plan is None
    assert begin(book, BatchPlan(1)).empty  # nothing was admitted; the book goes on


def test_a_chunk_past_the_model_length_is_rejected() -> None:
    book = PlanBook(4, PlanLimits(512, 4, max_model_len=6))
    plan = BatchPlan(0, (new("a", 8),), (sched("a", 8, 0),))
    book.drop(plan)
    with pytest.raises(PlanError, match="8 tokens exceed the model's max length 6") as err:
        book.admit(plan)
    assert err.value.request_id == "a"


def test_a_rejected_plan_still_drops_its_finished_and_preempted_requests() -> None:
    # The planner forgets these requests when it plans their drop: were the drop undone with the
    # rest of a bad plan, their state and leases would stay on the worker for good.
    book, blocks = PlanBook(4, LIMITS), Blocks()
    run(book, blocks, BatchPlan(0, (new("a", 4), new("b", 4)), (sched("a", 4, 0), sched("b", 4, 0))))
    bad = BatchPlan(1, (), (sched("ghost", 1, 0),), finished_request_ids=("a",), preempted_request_ids=("b",))
    dropped = book.drop(bad)
    with pytest.raises(PlanError, match="ghost"):
        book.admit(bad)
    assert [s.request_id for s in dropped] == ["b"] and book.request_ids == ()
    assert set(book.unreleased) == {"a", "b"}
    assert set(begin(book, BatchPlan(2)).release_request_ids) == {"a", "b"}


def test_new_request_for_a_running_id_needs_its_preemption_in_the_same_plan() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    run(book, blocks, BatchPlan(0, (new("a", 4),), (sched("a", 4, 0),)))
    plan = BatchPlan(1, (new("a", 4),), ())
    book.drop(plan)
    with pytest.raises(PlanError, match="already running"):
        book.admit(plan)
    delta = begin(book, BatchPlan(2, (new("a", 6),), (sched("a", 6, 0),), preempted_request_ids=("a",)))
    assert delta.release_request_ids == ("a",) and delta.leases[0].num_blocks == 2


def test_grants_must_answer_the_leases() -> None:
    book = PlanBook(4, LIMITS)
    begin(book, BatchPlan(0, (new("a", 5),), (sched("a", 5, 0),)))
    with pytest.raises(PlanError, match="does not answer"):
        book.grant([Grant("a", (1,))])
    with pytest.raises(PlanError, match="answered 0 grants for 1 leases"):
        book.grant([])
    with pytest.raises(PlanError, match=r"outside this worker's 32 blocks"):
        book.grant([Grant("a", (3, 32))])
    book.grant([Grant("a", (3, 9))])
    assert book.state("a").block_table == [3, 9]


def test_the_decode_rule_counts_one_token_past_the_prompt_as_a_decode_and_anything_else_as_prefill() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    _, work = run(book, blocks, BatchPlan(0, (new("a", 6), new("p", 3)), (sched("a", 6, 0), sched("p", 1, 0, False))))
    assert (work.num_prefill_tokens, work.num_decode_seqs, work.num_kv_tokens_read) == (7, 0, 7)
    # a decodes (1 token at the prompt's end); p's 1-token chunk is still inside its prompt.
    _, work = run(book, blocks, BatchPlan(1, (), (sched("a", 1, 6), sched("p", 1, 1, False))))
    assert (work.num_prefill_tokens, work.num_decode_seqs, work.num_kv_tokens_read) == (1, 1, 7 + 2)
    # Re-admitted after a recompute preemption: its sampled tokens are prefill work again.
    resumed = NewRequest("a", tuple(book.state("a").token_ids), 6, SamplingParams(max_tokens=8, seed=5), BE, 2)
    _, work = run(book, blocks, BatchPlan(2, (resumed,), (sched("a", 8, 0),), preempted_request_ids=("a",)))
    assert (work.num_prefill_tokens, work.num_decode_seqs) == (8, 0)
    assert work.timing(forward_ns=3).num_prefill_tokens == 8 and work.timing(forward_ns=3).forward_ns == 3


def test_commit_appends_sampled_tokens_in_plan_order_and_advances_the_draws() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    book.grant(blocks.apply(begin(book, BatchPlan(0, (new("a", 3, outputs=1), new("b", 2)),
                                                  (sched("b", 2, 0), sched("a", 3, 0))))))
    with pytest.raises(PlanError, match="1 sampled tokens for 2 sampling requests"):
        book.commit([40])
    assert book.commit([40, 41]) == (("b", 40), ("a", 41))
    a = book.state("a")
    assert (a.token_ids[-1], a.num_computed, a.next_draw) == (41, 3, 2)  # 1 output before, 1 now
    assert book.open_plan is None


def test_a_missing_seed_is_derived_from_the_request_id() -> None:
    first, second = PlanBook(4, LIMITS), PlanBook(4, LIMITS)
    for book in (first, second):
        begin(book, BatchPlan(0, (new("req-1", 2, seed=None), new("req-2", 2, seed=None), new("s", 2, seed=0)), ()))
    assert first.state("req-1").sampling.seed == second.state("req-1").sampling.seed == derive_seed("req-1")
    assert first.state("req-1").sampling.seed != first.state("req-2").sampling.seed
    assert first.state("s").sampling.seed == 0  # an explicit seed, 0 included, is kept


def test_a_restored_request_starts_at_its_checkpoint_and_a_failed_restore_recomputes_from_0() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    plan = BatchPlan(0, (new("ok", 9, outputs=1, computed=8), new("lost", 9, outputs=1, computed=8)),
                     (sched("ok", 1, 8), sched("lost", 1, 8)))
    delta = begin(book, plan)
    assert [(r.request_id, r.num_tokens) for r in delta.restores] == [("ok", 8), ("lost", 8)]
    assert [s.num_blocks for s in delta.leases] == [3, 3]  # the restored prefix needs blocks too
    book.grant(blocks.apply(delta))
    assert book.pending_restores() == (RestoreSpec("ok", 8), RestoreSpec("lost", 8))
    book.restore("ok", True)
    book.restore("lost", False)
    work = book.work()
    assert [(c.state.request_id, c.start, c.end) for c in book.chunks()] == [("ok", 8, 9), ("lost", 0, 9)]
    # ok: a decode (one token past its prompt of 8); lost: 9 tokens of prefill, 8 of them recomputed.
    assert (work.num_decode_seqs, work.num_prefill_tokens, work.num_recomputed_tokens) == (1, 9, 8)
    assert work.restore_failed_request_ids == ("lost",) and work.num_kv_tokens_read == 18
    with pytest.raises(PlanError, match="settled already"):
        book.restore("ok", True)
    book.commit([3, 4])
    assert book.state("lost").num_computed == book.state("ok").num_computed == 9


def test_abort_drops_the_steps_requests_and_carries_the_releases_the_apply_did_not_make() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    run(book, blocks, BatchPlan(0, (new("a", 4), new("b", 4)), (sched("a", 4, 0), sched("b", 4, 0))))
    begin(book, BatchPlan(1, (new("c", 3),), (sched("a", 1, 4), sched("c", 3, 0)), finished_request_ids=("b",)))
    assert set(book.abort(kv_applied=False)) == {"a", "c"}
    assert book.request_ids == () and book.abort(kv_applied=False) == ()
    assert set(begin(book, BatchPlan(2)).release_request_ids) == {"a", "b", "c"}  # b's release never happened
    book.commit([])
    run(book, blocks, BatchPlan(3, (new("d", 4),), (sched("d", 4, 0),)))
    blocks.apply(begin(book, BatchPlan(4, (new("e", 4),), (sched("e", 4, 0),), finished_request_ids=("d",))))
    book.abort(kv_applied=True)
    assert begin(book, BatchPlan(5)).release_request_ids == ("e",)  # d's release went with the Apply


def test_a_step_must_close_before_the_next_and_reset_returns_every_lease() -> None:
    book, blocks = PlanBook(4, LIMITS), Blocks()
    run(book, blocks, BatchPlan(0, (new("a", 4), new("b", 4)), (sched("a", 4, 0), sched("b", 2, 0, False))))
    begin(book, BatchPlan(1, (), (), finished_request_ids=("a",)))  # open step: a's release pending
    with pytest.raises(PlanError, match="step 1 is still open"):
        book.drop(BatchPlan(2))
    assert set(book.reset()) == {"a", "b"} and book.request_ids == () and book.open_plan is None
    with pytest.raises(PlanError, match="drop\\(plan\\) must come before admit\\(plan\\)"):
        book.admit(BatchPlan(3))


def test_a_prefix_hit_starts_past_its_cached_tokens_and_is_no_restore() -> None:
    book = PlanBook(16, LIMITS)
    new = NewRequest("a", tuple(range(40)), 40, SamplingParams(max_tokens=4, seed=1), BE, 0, 32, (),
                     num_cached_tokens=32)
    plan = BatchPlan(1, new_requests=(new,), scheduled=(ScheduledRequest("a", 8, 32, True),))
    book.drop(plan)
    delta = book.admit(plan)
    assert delta.restores == () and book.state("a").num_computed == 32
    assert delta.leases[0].num_blocks == 3  # every block of the request, its cached prefix included
    book.grant(Blocks().apply(delta))
    work = book.work()
    assert (work.num_prefill_tokens, work.num_kv_tokens_read) == (8, 40)


def test_a_prefix_hit_must_leave_a_prompt_token_to_compute() -> None:
    new = NewRequest("a", tuple(range(32)) + (5,), 32, SamplingParams(max_tokens=4, seed=1), BE, 1, 32, (),
                     num_cached_tokens=32)
    book, plan = PlanBook(16, LIMITS), BatchPlan(1, new_requests=(new,), scheduled=(ScheduledRequest("a", 1, 32, True),))
    book.drop(plan)
    with pytest.raises(PlanError, match="leave a prompt token to compute"):
        book.admit(plan)
