"""The scheduler core's mechanics: chunked prefill, pipelining, stop checks, abort, failures."""

from __future__ import annotations

import pytest

from llmserve.errors import CapacityError, InvalidRequestError
from scheduler_svc.core import FinishReason, RequestStatus, ScheduledRequest, StepResult
from tests.factories import EOS, default_token, make_driver, make_request, make_scheduler


def test_chunked_prefill_respects_the_token_budget_then_decodes():
    sched = make_scheduler(max_num_batched_tokens=4)
    sched.add_request(make_request("a", prompt_len=10, max_tokens=3))
    driver = make_driver(sched)
    driver.max_inflight = 1
    driver.run()
    chunks = [p.scheduled[0] for p in driver.plans if p.scheduled]
    assert chunks[:3] == [
        ScheduledRequest("a", 4, 0, False),
        ScheduledRequest("a", 4, 4, False),
        ScheduledRequest("a", 2, 8, True),
    ]
    assert chunks[3:] == [ScheduledRequest("a", 1, 10, True), ScheduledRequest("a", 1, 11, True)]
    assert driver.tokens_of("a") == [default_token("a", i) for i in range(3)]
    assert driver.finish_of("a").finish_reason is FinishReason.LENGTH
    assert driver.plans[-1].finished_request_ids == ("a",)
    assert sched.ledger.num_used == 0 and not sched.has_unfinished_requests()


def test_budget_is_shared_and_new_requests_are_sent_once():
    sched = make_scheduler(max_num_batched_tokens=10)
    sched.add_request(make_request("a", prompt_len=6))
    sched.add_request(make_request("b", prompt_len=6))
    plan = sched.schedule()
    assert [s.num_tokens for s in plan.scheduled] == [6, 4]
    assert [n.request_id for n in plan.new_requests] == ["a", "b"]
    assert plan.num_scheduled_tokens == 10
    plan2 = sched.schedule()  # pipelined: before update of plan 1
    assert plan2.new_requests == ()
    assert [(s.request_id, s.num_tokens, s.num_computed_tokens, s.sample) for s in plan2.scheduled] == [
        ("a", 1, 6, True), ("b", 2, 4, True)]


def test_pipelined_decode_is_planned_before_the_previous_token_is_known():
    sched = make_scheduler()
    sched.add_request(make_request("a", prompt_len=4, max_tokens=2))
    p0 = sched.schedule()
    p1 = sched.schedule()
    assert p1.scheduled == (ScheduledRequest("a", 1, 4, True),)
    # max_tokens=2 are both being sampled: nothing more to plan until results come back.
    assert sched.schedule().is_empty()
    assert sched.get_request("a").num_output_placeholders == 2
    outs = sched.update(StepResult(p0.step_id, (("a", 7),)))
    assert [(o.new_token_ids, o.finish_reason) for o in outs] == [((7,), None)]
    outs = sched.update(StepResult(p1.step_id, (("a", 8),)))
    assert [(o.new_token_ids, o.finish_reason) for o in outs] == [((8,), FinishReason.LENGTH)]
    assert sched.schedule().finished_request_ids == ("a",)


def test_eos_at_step_n_discards_the_token_of_step_n_plus_1():
    sched = make_scheduler()
    sched.add_request(make_request("a", prompt_len=4, max_tokens=10))
    p0, p1 = sched.schedule(), sched.schedule()
    outs = sched.update(StepResult(p0.step_id, (("a", EOS),)))
    assert outs[0].finish_reason is FinishReason.STOP and outs[0].new_token_ids == (EOS,)
    p2 = sched.schedule()
    assert p2.finished_request_ids == ("a",) and p2.scheduled == ()
    assert sched.ledger.num_used == 0
    assert sched.update(StepResult(p1.step_id, (("a", 55),))) == []  # the extra token is dropped
    assert sched.get_request("a") is None


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_eos_and_ignore_eos(ignore_eos):
    sched = make_scheduler()
    sched.add_request(make_request("a", max_tokens=5, ignore_eos=ignore_eos))
    driver = make_driver(sched, eos_at={"a": 1})
    driver.run()
    tokens = driver.tokens_of("a")
    if ignore_eos:
        assert len(tokens) == 5 and tokens[1] == EOS
        assert driver.finish_of("a").finish_reason is FinishReason.LENGTH
    else:
        assert tokens == [default_token("a", 0), EOS]
        assert driver.finish_of("a").finish_reason is FinishReason.STOP


def test_stop_token_ids_stop_even_with_ignore_eos():
    sched = make_scheduler()
    stop = default_token("a", 2)
    sched.add_request(make_request("a", max_tokens=8, ignore_eos=True, stop_token_ids=(stop,)))
    driver = make_driver(sched)
    driver.run()
    assert driver.tokens_of("a")[-1] == stop and len(driver.tokens_of("a")) == 3
    assert driver.finish_of("a").finish_reason is FinishReason.STOP


def test_max_model_len_is_enforced_at_admission():
    sched = make_scheduler(max_model_len=32)
    with pytest.raises(InvalidRequestError, match="context length 32"):
        sched.add_request(make_request(prompt_len=20, max_tokens=13))
    sched.add_request(make_request(prompt_len=20, max_tokens=12))


def test_admission_validation_and_capacity():
    sched = make_scheduler(max_num_waiting=2, num_blocks=8)
    with pytest.raises(InvalidRequestError, match="KV capacity"):
        sched.add_request(make_request(prompt_len=30, max_tokens=3))
    with pytest.raises(InvalidRequestError, match="empty"):
        sched.add_request(make_request(prompt_len=0))
    sched.add_request(make_request("x"))
    with pytest.raises(InvalidRequestError, match="already queued"):
        sched.add_request(make_request("x"))
    sched.add_request(make_request("y"))
    with pytest.raises(CapacityError):
        sched.add_request(make_request("z"))


def test_abort_running_frees_blocks_in_next_plan_and_cancels_once():
    sched = make_scheduler()
    sched.add_request(make_request("a", prompt_len=8, max_tokens=10))
    p0 = sched.schedule()
    assert sched.ledger.held("a") == 2
    assert sched.abort_request("a") is True
    assert sched.abort_request("a") is False
    p1 = sched.schedule()
    assert p1.finished_request_ids == ("a",) and p1.scheduled == ()
    assert sched.ledger.num_used == 0
    outs = sched.update(StepResult(p0.step_id, (("a", 5),)))
    assert [(o.request_id, o.new_token_ids, o.finish_reason) for o in outs] == [("a", (), FinishReason.CANCELLED)]
    assert sched.update(StepResult(p1.step_id)) == []


def test_abort_waiting_request_needs_no_plan():
    sched = make_scheduler()
    sched.add_request(make_request("a"))
    assert sched.abort_request("a")
    assert sched.schedule().is_empty()
    assert [o.finish_reason for o in sched.take_outputs()] == [FinishReason.CANCELLED]
    assert not sched.has_unfinished_requests()


def test_fail_step_requeues_for_recompute_and_loses_nothing():
    reference = make_scheduler()
    sched = make_scheduler()
    for s in (reference, sched):
        s.add_request(make_request("a", prompt_len=6, max_tokens=6))
        s.add_request(make_request("b", prompt_len=3, max_tokens=4))
    ref = make_driver(reference)
    ref.run()
    driver = make_driver(sched, fail_steps={3})
    driver.run()
    for rid in ("a", "b"):
        assert driver.tokens_of(rid) == ref.tokens_of(rid)
        assert driver.finish_of(rid).finish_reason is FinishReason.LENGTH
    assert sched.num_failed_steps >= 1
    assert any(p.preempted_request_ids for p in driver.plans)
    assert sched.ledger.num_used == 0 and driver.worker.num_used_blocks == 0


def test_evict_all_moves_requests_with_their_tokens():
    first = make_scheduler()
    first.add_request(make_request("a", prompt_len=5, max_tokens=8))
    driver = make_driver(first)
    for _ in range(4):
        driver.step()
    got = driver.tokens_of("a")
    assert 0 < len(got) < 8
    evicted = first.evict_all()
    assert [r.request_id for r in evicted] == ["a"]
    assert evicted[0].output_token_ids == got and evicted[0].num_computed_tokens == 0
    assert first.ledger.num_used == 0 and not first.has_unfinished_requests()
    second = make_scheduler()
    second.add_request(evicted[0])
    plan = second.schedule()
    assert plan.new_requests[0].token_ids == tuple(range(10, 15)) + tuple(got)
    assert plan.new_requests[0].num_output_tokens == len(got)
    driver2 = make_driver(second)
    driver2.inflight.append(driver2.worker.execute(plan))
    driver2.run()
    assert got + driver2.tokens_of("a") == [default_token("a", i) for i in range(8)]


def test_max_num_seqs_caps_running_requests():
    sched = make_scheduler(max_num_seqs=2)
    for i in range(4):
        sched.add_request(make_request(f"r{i}", prompt_len=2))
    plan = sched.schedule()
    assert {s.request_id for s in plan.scheduled} == {"r0", "r1"}
    assert sched.stats().num_running == 2 and sched.stats().num_waiting == 2


def test_stats_report_kv_by_class():
    from scheduler_svc.core import ServiceClass

    sched = make_scheduler(policy="priority")
    sched.add_request(make_request("rt", prompt_len=8, service_class=ServiceClass.REAL_TIME))
    sched.add_request(make_request("be", prompt_len=4))
    sched.schedule()
    stats = sched.stats()
    assert stats.kv_blocks_by_class[ServiceClass.REAL_TIME] == 2
    assert stats.kv_blocks_by_class[ServiceClass.BEST_EFFORT] == 1
    assert stats.num_free_blocks == 61 and stats.policy == "priority"
    assert sched.get_request("rt").status is RequestStatus.RUNNING


def test_a_failed_step_does_not_cascade_through_the_pipeline():
    sched = make_scheduler(max_num_batched_tokens=5, max_num_seqs=3)
    driver = make_driver(sched, fail_steps={2})
    sched.add_request(make_request("a", prompt_len=1, max_tokens=6))
    for rnd in range(60):
        if rnd == 2:
            sched.add_request(make_request("b", prompt_len=1, max_tokens=2))
        if rnd == 3:
            sched.add_request(make_request("c", prompt_len=1, max_tokens=2))
        driver.step()
    assert sched.num_failed_steps <= 2  # the failed step and the doomed one already in flight
    assert driver.tokens_of("a") == [default_token("a", i) for i in range(6)]
    assert all(driver.finish_of(r) is not None for r in "abc")
    assert not driver.worker.violations
