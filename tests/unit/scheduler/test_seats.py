"""Seats at `max_num_seqs`: a waiting on-time RT request may take the seat of cheap non-RT work
(`StepBuilder._take_seat`, `slo_step.may_take_seat_of`), for bros and tempo, when the victim's
checkpoint fits the host tier (`CheckpointBook.fits`); other policies never."""

from __future__ import annotations

import pytest

from scheduler_svc.core import LinearCostModel, RequestStatus, ServiceClass, StepResult
from scheduler_svc.core.checkpoints import CheckpointBook
from tests.factories import make_request, make_scheduler

RT, BE = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT
COST = LinearCostModel(a_s=0.010, b_s_per_prefill_token=0.001, c_s_per_decode_seq=0.001, d_s_per_kv_token=0.0)


def _options(policy: str, **extra: object) -> dict[str, object]:
    """bros and tempo with seat-taking on (it is opt-in), unless `extra` says otherwise."""
    if policy not in ("bros", "tempo"):
        return dict(extra)
    return {"cost_model": COST, "min_prefill_chunk": 4, "take_seats": True, **extra}


def _book(tier_blocks: int | None = 64) -> CheckpointBook:
    """A checkpoint book whose host tier holds `tier_blocks` blocks of 4 tokens (None: size unknown)."""
    book = CheckpointBook()
    if tier_blocks is not None:
        book.set_capacity(tier_blocks * 100, 100, 4)
    return book


def _seats_full_of_be(policy: str, be_prompts: tuple[int, ...], wait_s: float = 1.5,
                      book: CheckpointBook | None = None, no_book: bool = False,
                      options: dict[str, object] | None = None, **extra: object):
    """BE requests with these prompt lengths take every seat (max_num_seqs = their number) and
    decode; `wait_s` later an RT request with an 8-token prompt arrives. `book`: the checkpoint
    book (default a 64-block tier; `no_book`: none); `options`: the policy's, instead of
    `_options(policy, **extra)` (seat-taking on)."""
    sched = make_scheduler(policy, max_num_seqs=len(be_prompts), num_blocks=64,
                           policy_options=options if options is not None else _options(policy, **extra),
                           checkpoints=None if no_book else book if book is not None else _book())
    now = sched.clock.now()
    for i, n in enumerate(be_prompts):
        sched.add_request(make_request(f"be{i}", prompt_len=n, max_tokens=32, service_class=BE, arrival_s=now + i))
    p0 = sched.schedule()
    assert len(p0.new_requests) == len(be_prompts)
    sched.update(StepResult(p0.step_id, tuple((f"be{i}", 5) for i in range(len(be_prompts)))))
    sched.clock.advance(wait_s)
    return sched


def _add_rt(sched, rid: str = "rt") -> None:
    sched.add_request(make_request(rid, prompt_len=8, max_tokens=4, service_class=RT, ttft_ms=1000,
                                   arrival_s=sched.clock.now()))


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_rt_takes_the_seat_of_the_be_request_holding_the_fewest_blocks(policy):
    sched = _seats_full_of_be(policy, (6, 2, 7))
    _add_rt(sched)
    plan = sched.schedule()
    assert plan.preempted_request_ids == ("be1",)  # 3 tokens computed: 1 block, the others 2
    assert [n.request_id for n in plan.new_requests] == ["rt"]
    assert sched.get_request("be1").status is RequestStatus.PREEMPTED
    assert {s.request_id for s in plan.scheduled} == {"be0", "be2", "rt"}


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_a_seat_is_never_taken_from_work_holding_more_kv_than_the_rt_prompt(policy):
    sched = _seats_full_of_be(policy, (12, 9))  # 13 and 10 tokens computed > the RT prompt's 8
    _add_rt(sched)
    plan = sched.schedule()
    assert plan.preempted_request_ids == () and plan.new_requests == ()


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_a_seat_is_never_taken_from_a_request_just_readmitted_nor_from_rt(policy):
    sched = _seats_full_of_be(policy, (2, 2), wait_s=0.5)  # admitted 0.5 s ago < victim_hold_s
    _add_rt(sched)
    assert sched.schedule().preempted_request_ids == ()

    sched = make_scheduler(policy, max_num_seqs=1, num_blocks=64, policy_options=_options(policy), checkpoints=_book())
    _add_rt(sched, "rt0")
    p0 = sched.schedule()
    sched.update(StepResult(p0.step_id, (("rt0", 5),)))
    sched.clock.advance(1.5)
    _add_rt(sched, "rt1")
    assert sched.schedule().preempted_request_ids == ()


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_seat_taking_is_off_by_default(policy):
    sched = _seats_full_of_be(policy, (2, 2), options={"cost_model": COST, "min_prefill_chunk": 4})
    _add_rt(sched)
    assert sched.schedule().preempted_request_ids == ()


@pytest.mark.parametrize("policy", ["fcfs", "priority", "edf"])
def test_other_policies_never_take_seats(policy):
    sched = _seats_full_of_be(policy, (2, 2))
    _add_rt(sched)
    plan = sched.schedule()
    assert plan.preempted_request_ids == () and plan.new_requests == ()


def test_victims_in_flight_are_drained_one_per_waiting_rt_request():
    # A plan is in flight: the victims cannot be preempted before their results are back, so they
    # are drained. Two RT requests wait: two seats are put on their way, not three.
    sched = _seats_full_of_be("bros", (2, 2, 2))
    p_inflight = sched.schedule()
    assert len(p_inflight.scheduled) == 3
    _add_rt(sched, "rt0")
    _add_rt(sched, "rt1")
    plan = sched.schedule()
    assert plan.preempted_request_ids == () and plan.new_requests == ()  # drained, not yet free
    assert {s.request_id for s in plan.scheduled} == {"be0"}  # the two lowest ranked are drained
    sched.update(StepResult(p_inflight.step_id, (("be0", 6), ("be1", 6), ("be2", 6))))
    statuses = {rid: sched.get_request(rid).status for rid in ("be0", "be1", "be2")}
    assert sorted(s.name for s in statuses.values()).count("PREEMPTED") == 2
    sched.update(StepResult(plan.step_id, (("be0", 7),)))
    admitted = sched.schedule()
    assert sorted(n.request_id for n in admitted.new_requests) == ["rt0", "rt1"]


@pytest.mark.parametrize("tier_blocks", [None, 0, 1])
def test_a_seat_is_never_bought_with_a_recompute(tier_blocks):
    # The victim (3 tokens: 1 block) is taken only if its checkpoint fits the host tier beside
    # the book's others; with the tier's size unknown, full, or holding one block that another
    # checkpoint takes, it keeps its seat.
    book = _book(tier_blocks)
    if tier_blocks == 1:
        book.on_checkpoint("someone-else", 4)
    sched = _seats_full_of_be("bros", (2, 6), book=book)
    _add_rt(sched)
    assert sched.schedule().preempted_request_ids == ()
    assert book.fits(4) is False


def test_the_book_counts_the_tier_in_blocks_exactly():
    book = _book(4)  # 4 blocks of 4 tokens
    book.on_checkpoint("a", 5)  # 2 blocks
    assert book.fits(8) and not book.fits(9)
    book.on_checkpoint("a", 8)  # the same request checkpointed again: still 2 blocks
    book.on_checkpoint("b", 1)
    assert book.fits(4) and not book.fits(5)
    book.on_checkpoint_failed("b")
    assert book.forget("a")
    assert book.fits(16) and not book.fits(17)
    book.on_checkpoint("c", 16)
    book.on_tier_lost()
    assert book.fits(16)


def test_without_a_checkpoint_book_no_seat_is_taken():
    sched = _seats_full_of_be("bros", (2, 2), no_book=True)
    _add_rt(sched)
    assert sched.schedule().preempted_request_ids == ()


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_deadline_work_keeps_its_seat_while_it_can_still_meet_its_deadline(policy):
    def run(deadline_ms: float):
        sched = make_scheduler(policy, max_num_seqs=1, num_blocks=64, policy_options=_options(policy),
                               checkpoints=_book())
        sched.add_request(make_request("dl", prompt_len=2, max_tokens=32, service_class=ServiceClass.DEADLINE,
                                       deadline_ms=deadline_ms, arrival_s=sched.clock.now()))
        p0 = sched.schedule()
        sched.update(StepResult(p0.step_id, (("dl", 5),)))
        sched.clock.advance(1.5)
        _add_rt(sched)
        return sched.schedule().preempted_request_ids

    assert run(deadline_ms=60_000) == ()  # on time: not a victim
    assert run(deadline_ms=1_000) == ("dl",)  # its deadline passed: it may give up its seat
