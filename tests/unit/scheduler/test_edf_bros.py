"""EDF and BROS decisions in hand-made situations."""

from __future__ import annotations

from scheduler_svc.core import LinearCostModel, RequestStatus, ServiceClass, StepResult
from tests.factories import make_driver, make_request, make_scheduler

RT, DL, BE = ServiceClass.REAL_TIME, ServiceClass.DEADLINE, ServiceClass.BEST_EFFORT


def test_edf_orders_by_next_token_deadline():
    sched = make_scheduler("edf", max_num_batched_tokens=12)
    now = sched.clock.now()
    sched.add_request(make_request("be", prompt_len=4, service_class=BE, arrival_s=now - 10))
    sched.add_request(make_request("dl", prompt_len=4, service_class=DL, deadline_ms=500, arrival_s=now))
    sched.add_request(make_request("rt", prompt_len=4, service_class=RT, ttft_ms=200, arrival_s=now))
    sched.add_request(make_request("rt_loose", prompt_len=4, service_class=RT, ttft_ms=900, arrival_s=now))
    plan = sched.schedule()
    assert [s.request_id for s in plan.scheduled] == ["rt", "dl", "rt_loose"]


def test_edf_running_keys_follow_the_token_index():
    sched = make_scheduler("edf", max_num_batched_tokens=1)
    now = sched.clock.now()
    # a: token i due at now + 0.1 + 0.1 i; b: due at now + 0.15 + 0.5 i.
    sched.add_request(make_request("a", prompt_len=1, max_tokens=8, service_class=RT, ttft_ms=100, tpot_ms=100,
                                   arrival_s=now))
    sched.add_request(make_request("b", prompt_len=1, max_tokens=8, service_class=RT, ttft_ms=150, tpot_ms=500,
                                   arrival_s=now))
    driver = make_driver(sched)
    driver.max_inflight = 1
    order = []
    for _ in range(5):
        driver.send()
        order.append(driver.plans[-1].scheduled[0].request_id)
        driver.receive()
    # a (0.1) < b (0.15) < a#1 (0.2) < a#2 (0.3) < a#3 (0.4)... b#1 is due at 0.65.
    assert order == ["a", "b", "a", "a", "a"]


def _bros(**options):
    cost = LinearCostModel(a_s=0.010, b_s_per_prefill_token=0.001, c_s_per_decode_seq=0.001, d_s_per_kv_token=0.0)
    opts = {"cost_model": cost, "min_prefill_chunk": 4}
    opts.update(options)
    return opts


def test_bros_ranks_on_time_work_by_slack_then_be():
    sched = make_scheduler("bros", max_num_batched_tokens=64, policy_options=_bros())
    now = sched.clock.now()
    sched.add_request(make_request("be", prompt_len=2, service_class=BE, arrival_s=now - 5))
    sched.add_request(make_request("dl_far", prompt_len=2, service_class=DL, deadline_ms=5000, arrival_s=now))
    sched.add_request(make_request("dl_near", prompt_len=2, service_class=DL, deadline_ms=100, arrival_s=now))
    # Same TTFT, but the long prompt needs 30 ms more prefill: less slack, so it goes first.
    sched.add_request(make_request("rt_short", prompt_len=2, service_class=RT, ttft_ms=1000, arrival_s=now))
    sched.add_request(make_request("rt_long", prompt_len=32, service_class=RT, ttft_ms=1000, arrival_s=now))
    plan = sched.schedule()
    # On-time RT and deadline work compete by slack (a deadline due first goes first, as in EDF).
    assert [s.request_id for s in plan.scheduled] == ["dl_near", "rt_long", "rt_short", "dl_far", "be"]


def test_bros_ranks_lost_work_after_work_that_can_still_make_it():
    sched = make_scheduler("bros", max_num_batched_tokens=64, policy_options=_bros())
    sched.clock.advance(10.0)
    now = sched.clock.now()
    sched.add_request(make_request("be", prompt_len=2, service_class=BE, arrival_s=now - 9))
    sched.add_request(make_request("rt_lost", prompt_len=4, service_class=RT, ttft_ms=500, arrival_s=now - 2))
    sched.add_request(make_request("dl_lost", prompt_len=4, service_class=DL, deadline_ms=500, arrival_s=now - 2))
    sched.add_request(make_request("dl", prompt_len=4, service_class=DL, deadline_ms=5000, arrival_s=now))
    sched.add_request(make_request("rt", prompt_len=4, service_class=RT, ttft_ms=1000, arrival_s=now))
    plan = sched.schedule()
    assert [s.request_id for s in plan.scheduled] == ["rt", "dl", "rt_lost", "dl_lost", "be"]


def _be_chunk_beside_a_stream(slack_bank_tpots: float) -> tuple[int, bool, int]:
    """(BE tokens, whether it samples, RT tokens) in the step after an RT stream's first token."""
    sched = make_scheduler("bros", max_num_batched_tokens=200, max_model_len=512, num_blocks=128,
                           policy_options={**_bros(), "slack_bank_tpots": slack_bank_tpots})
    now = sched.clock.now()
    # RT request already decoding: its next token (index 1) is due 45 ms from now.
    rt = make_request("rt", prompt_len=4, max_tokens=20, service_class=RT, ttft_ms=5, tpot_ms=40, arrival_s=now)
    sched.add_request(rt)
    p0 = sched.schedule()
    sched.update(StepResult(p0.step_id, (("rt", 7),)))
    sched.add_request(make_request("be", prompt_len=150, max_tokens=4, service_class=BE, arrival_s=now))
    p1 = sched.schedule()
    by_id = {s.request_id: s for s in p1.scheduled}
    return by_id["be"].num_tokens, by_id["be"].sample, by_id["rt"].num_tokens


def test_bros_trims_be_work_to_the_tightest_rt_deadline():
    # start = now (nothing in flight). The token is due at 45 ms, but a stream's step lasts at
    # most its TPOT (40 ms: it keeps its slack, step_guard.py): 10 + 1 (decode) + 1·m ≤ 40 -> m = 29
    assert _be_chunk_beside_a_stream(0.0) == (29, False, 1)
    # With its slack bank (5 ms of slack, under 10 TPOTs) BE fills only half the TPOT: m = 9.
    assert _be_chunk_beside_a_stream(10.0) == (9, False, 1)


def test_bros_without_rt_be_uses_the_whole_budget():
    sched = make_scheduler("bros", max_num_batched_tokens=100, num_blocks=128, policy_options=_bros())
    sched.add_request(make_request("be", prompt_len=150, max_tokens=4, service_class=BE))
    assert sched.schedule().scheduled[0].num_tokens == 100


def _be_pool_then(sched, rt_ttft_ms: float, wait_s: float = 1.5, be_prompt: int = 12):
    """be1 and be2 fill a 6-block pool and decode; `wait_s` later an RT request arrives. With
    12-token prompts their next decode needs a 4th block each; with 10 it fits their 3 blocks."""
    now = sched.clock.now()
    sched.add_request(make_request("be1", prompt_len=be_prompt, max_tokens=4, service_class=BE, arrival_s=now))
    sched.add_request(make_request("be2", prompt_len=be_prompt, max_tokens=4, service_class=BE, arrival_s=now + 1))
    p0 = sched.schedule()
    assert sched.ledger.num_free == 0
    sched.update(StepResult(p0.step_id, (("be1", 5), ("be2", 6))))
    sched.clock.advance(wait_s)
    sched.add_request(make_request("rt", prompt_len=8, max_tokens=4, service_class=RT, ttft_ms=rt_ttft_ms,
                                   arrival_s=sched.clock.now()))
    return sched.schedule()


def test_bros_rt_takes_be_blocks_at_admission_when_its_first_token_needs_them():
    # Classic BROS order (RT ahead of every BE request): a waiting RT may take a decoding BE's
    # blocks, once its TTFT slack (30 ms - 18 ms of prefill) is under two steps (2 x 10 ms).
    sched = make_scheduler("bros", num_blocks=6, policy_options=_bros(decodes_first=False))
    p1 = _be_pool_then(sched, rt_ttft_ms=30)
    assert p1.preempted_request_ids == ("be2",)  # the latest BE, nearest the boundary
    assert [n.request_id for n in p1.new_requests] == ["rt"]
    assert sched.get_request("be2").status is RequestStatus.PREEMPTED
    assert sched.stats().kv_blocks_by_class[RT] == 2


def test_bros_rt_with_slack_waits_for_blocks_instead_of_preempting():
    sched = make_scheduler("bros", num_blocks=6, policy_options=_bros(decodes_first=False))
    p1 = _be_pool_then(sched, rt_ttft_ms=1000, be_prompt=10)
    assert p1.preempted_request_ids == () and p1.new_requests == ()
    assert {s.request_id for s in p1.scheduled} == {"be1", "be2"}


def test_bros_never_preempts_a_victim_just_readmitted():
    # Same urgency as above, but the BE requests were admitted 0.5 s ago (< victim_hold_s = 1 s).
    sched = make_scheduler("bros", num_blocks=6, policy_options=_bros(decodes_first=False))
    p1 = _be_pool_then(sched, rt_ttft_ms=30, wait_s=0.5, be_prompt=10)
    assert p1.preempted_request_ids == () and p1.new_requests == ()


def test_bros_decodes_first_rt_takes_blocks_of_be_still_in_prefill():
    # be1 decodes, be2 is mid-prompt: a waiting RT ranks after decodes but ahead of every prefill,
    # so it takes be2's blocks (the long prompt), not those of the stream that is producing tokens.
    sched = make_scheduler("bros", num_blocks=6, max_num_batched_tokens=20, policy_options=_bros())
    now = sched.clock.now()
    sched.add_request(make_request("be1", prompt_len=8, max_tokens=4, service_class=BE, arrival_s=now))
    sched.add_request(make_request("be2", prompt_len=16, max_tokens=4, service_class=BE, arrival_s=now + 1))
    p0 = sched.schedule()
    assert {s.request_id: s.num_tokens for s in p0.scheduled} == {"be1": 8, "be2": 12}  # 5 of 6 blocks
    sched.update(StepResult(p0.step_id, (("be1", 5),)))
    sched.clock.advance(1.5)  # past victim_hold_s; the RT's TTFT slack is under two steps
    sched.add_request(make_request("rt", prompt_len=8, max_tokens=4, service_class=RT, ttft_ms=30,
                                   arrival_s=sched.clock.now()))
    p1 = sched.schedule()
    assert p1.preempted_request_ids == ("be2",)
    assert [n.request_id for n in p1.new_requests] == ["rt"]
    assert [s.request_id for s in p1.scheduled] == ["be1", "rt"]
    assert sched.get_request("be1").status is RequestStatus.RUNNING


def test_bros_decodes_first_keeps_streams_in_a_step_a_prefill_fills():
    # A tight-TTFT RT prompt larger than the budget would take the whole step in slack order;
    # decodes first, the RT and BE streams still get their token and the chunk takes the rest.
    sched = make_scheduler("bros", max_num_batched_tokens=32, max_model_len=512, num_blocks=128,
                           policy_options=_bros())
    now = sched.clock.now()
    sched.add_request(make_request("be", prompt_len=4, max_tokens=20, service_class=BE, arrival_s=now))
    sched.add_request(make_request("rt", prompt_len=4, max_tokens=20, service_class=RT, ttft_ms=5000,
                                   tpot_ms=5000, arrival_s=now))
    p0 = sched.schedule()
    sched.update(StepResult(p0.step_id, (("be", 5), ("rt", 6))))
    sched.add_request(make_request("big", prompt_len=100, service_class=RT, ttft_ms=200, arrival_s=now))
    p1 = sched.schedule()
    assert [(s.request_id, s.num_tokens) for s in p1.scheduled] == [("rt", 1), ("be", 1), ("big", 30)]
    off = make_scheduler("bros", max_num_batched_tokens=32, max_model_len=512, num_blocks=128,
                         policy_options=_bros(decodes_first=False))
    for r in ("be", "rt"):
        off.add_request(make_request(r, prompt_len=4, max_tokens=20, service_class=RT if r == "rt" else BE,
                                     ttft_ms=5000, tpot_ms=5000, arrival_s=now))
    q0 = off.schedule()
    off.update(StepResult(q0.step_id, (("be", 5), ("rt", 6))))
    off.add_request(make_request("big", prompt_len=100, service_class=RT, ttft_ms=200, arrival_s=now))
    assert [(s.request_id, s.num_tokens) for s in off.schedule().scheduled] == [("big", 32)]


def test_priority_policies_do_not_let_waiting_requests_preempt():
    sched = make_scheduler("edf", num_blocks=6)
    now = sched.clock.now()
    sched.add_request(make_request("be1", prompt_len=11, max_tokens=4, service_class=BE, arrival_s=now))
    sched.add_request(make_request("be2", prompt_len=11, max_tokens=4, service_class=BE, arrival_s=now))
    p0 = sched.schedule()
    sched.update(StepResult(p0.step_id, (("be1", 5), ("be2", 6))))
    sched.add_request(make_request("rt", prompt_len=8, max_tokens=4, service_class=RT, arrival_s=now))
    p1 = sched.schedule()
    assert p1.preempted_request_ids == () and p1.new_requests == ()


def test_bros_be_admission_leaves_the_rt_reserve():
    sched = make_scheduler("bros", num_blocks=8, policy_options=_bros(rt_reserve_blocks=3))
    sched.add_request(make_request("be1", prompt_len=12, max_tokens=4, service_class=BE))  # 3 blocks
    sched.add_request(make_request("be2", prompt_len=12, max_tokens=4, service_class=BE))  # would leave 2
    plan = sched.schedule()
    assert [n.request_id for n in plan.new_requests] == ["be1"]
    sched.add_request(make_request("rt", prompt_len=12, max_tokens=4, service_class=RT))
    plan = sched.schedule()
    assert [n.request_id for n in plan.new_requests] == ["rt"]


def test_bros_aging_lets_be_progress_under_saturating_rt_load():
    # RT deadlines are always already missed, so the guard gives BE nothing...
    sched = make_scheduler("bros", max_num_batched_tokens=64, num_blocks=128, max_model_len=1024,
                           policy_options=_bros(aging_s=0.5))
    clock = sched.clock
    driver = make_driver(sched)
    sched.add_request(make_request("be", prompt_len=40, max_tokens=2, service_class=BE, arrival_s=clock.now()))
    be_first = None
    for i in range(200):
        if len([r for r in sched.running_requests() if r.service_class is RT]) < 4:
            sched.add_request(make_request(f"rt{i}", prompt_len=2, max_tokens=30, service_class=RT, ttft_ms=1,
                                           tpot_ms=1, arrival_s=clock.now() - 1))
        driver.step()
        if be_first is None and any(s.request_id == "be" for p in driver.plans for s in p.scheduled):
            be_first = clock.now()
    assert be_first is not None and be_first - 1.0 <= 0.5 + 4 * driver.step_s
    assert driver.finish_of("be") is not None
