"""Tempo: length bounds learned online, service-gain density ordering, workflow deadline split."""

from __future__ import annotations

import pytest

from scheduler_svc.core import ServiceClass, WorkflowRef
from scheduler_svc.core.length_predictor import LengthPredictor
from scheduler_svc.core.policy.tempo import TempoPolicy
from scheduler_svc.core.workflow_graph import WorkflowTracker
from tests.factories import make_driver, make_request, make_scheduler

RT, DL, BE = ServiceClass.REAL_TIME, ServiceClass.DEADLINE, ServiceClass.BEST_EFFORT


def test_length_bound_starts_at_max_tokens_and_learns_quantiles():
    lp = LengthPredictor(quantile=0.9, min_samples=10)
    assert lp.upper_bound("t", 100, max_tokens=500) == 500
    for n in range(1, 101):  # lengths 1..100 for tenant t, prompts of ~100 tokens
        lp.observe("t", 100, n)
    assert lp.upper_bound("t", 100, max_tokens=500) == 91
    assert lp.upper_bound("t", 100, max_tokens=50) == 50  # capped by max_tokens
    # Outgrowing the bound: the quantile of the longer observations, then doubling.
    assert lp.upper_bound("t", 100, max_tokens=500, produced=95) == 100
    assert lp.upper_bound("t", 100, max_tokens=500, produced=150) == 300
    # Another tenant falls back to the prompt-length bucket.
    assert lp.upper_bound("other", 100, max_tokens=500) == 91
    assert lp.upper_bound("other", 3, max_tokens=500) == 91  # then to everything


def test_typical_length_of_a_cold_tenant_leans_on_the_others_until_it_has_a_few_samples():
    lp = LengthPredictor(quantile=0.95, min_samples=20)
    assert lp.typical_length("tool", 100, 0, prior_samples=5) is None  # nothing known at all
    for _ in range(40):  # chat answers of 200 tokens from another tenant
        lp.observe("chat", 100, 200)
    assert lp.typical_length("tool", 100, 0, prior_samples=5) == 200  # the pooled prior alone
    lp.observe("tool", 100, 10)
    lp.observe("tool", 100, 12)
    # Two own samples weigh 2 of 5: the prior still outweighs them.
    assert lp.typical_length("tool", 100, 0, prior_samples=5) == 200
    for _ in range(3):
        lp.observe("tool", 100, 11)
    # Five own samples: its own median alone, the other tenant's lengths no longer count.
    assert lp.typical_length("tool", 100, 0, prior_samples=5) == 11
    # Conditional on what it has produced: only longer observations count (then the prior's).
    assert lp.typical_length("tool", 100, 12, prior_samples=5) == 200
    # Warm (min_samples of its own): as the tenant-only median.
    for _ in range(20):
        lp.observe("tool", 100, 30)
    assert lp.typical_length("tool", 100, 0, prior_samples=5) == lp.length_quantile("tool", 100, 0, 0.5, tenant_only=True) == 30


def _deadline_and_be_order(learnt: bool) -> list[str]:
    sched = make_scheduler("tempo", max_num_batched_tokens=4, policy_options={"unit_time_s": 0.01})
    if learnt:  # the "tool" tenant's outputs are 10 tokens long: ≈ 0.1 s of work at 10 ms a token
        for _ in range(25):
            sched.policy.lengths.predictor.observe("tool", 4, 10)  # type: ignore[attr-defined]
    now = sched.clock.now()
    sched.add_request(make_request("late", prompt_len=4, max_tokens=10, service_class=DL, deadline_ms=20,
                                   arrival_s=now, tenant="tool"))
    sched.add_request(make_request("ok", prompt_len=4, max_tokens=10, service_class=DL, deadline_ms=5000,
                                   arrival_s=now, tenant="tool"))
    sched.add_request(make_request("be_long", prompt_len=4, max_tokens=200, service_class=BE, arrival_s=now))
    sched.add_request(make_request("be_short", prompt_len=4, max_tokens=10, service_class=BE, arrival_s=now))
    return [r.request_id for r in sorted(sched.waiting_requests(), key=lambda r: sched.ticket(r.request_id).sched_key)]


def test_tempo_prefers_feasible_deadline_work_and_short_jobs():
    # Its tenant's lengths say `late` cannot finish in 20 ms: a hopeless deadline is worth ~nothing.
    order = _deadline_and_be_order(learnt=True)
    assert order[0] == "ok" and order[-1] == "late"
    # Nothing learnt yet: deadline work gets the benefit of the doubt, by latest start (as EDF);
    # best-effort by density, shortest bound (max_tokens at a cold start) first.
    assert _deadline_and_be_order(learnt=False) == ["late", "ok", "be_short", "be_long"]


def test_tempo_learns_short_outputs_per_tenant():
    sched = make_scheduler("tempo", policy_options={"min_samples": 5}, max_model_len=512, num_blocks=256)
    policy: TempoPolicy = sched.policy  # type: ignore[assignment]
    eos_at = {f"chat{i}": 2 for i in range(8)}
    driver = make_driver(sched, eos_at=eos_at)
    for i in range(8):
        sched.add_request(make_request(f"chat{i}", prompt_len=8, max_tokens=200, tenant="chat"))
    driver.run()
    assert policy.lengths.predictor.upper_bound("chat", 8, 200) == 3
    fresh = make_request("new", prompt_len=8, max_tokens=200, tenant="chat")
    sched.add_request(fresh)
    assert fresh.policy_state.bound == 3


def _close_workflow(tracker: WorkflowTracker, wid: str, stage_times: list[float], start: float = 0.0) -> None:
    """Runs one call per stage; stage s's call finishes at start + stage_times[s]."""
    for s, t in enumerate(stage_times):
        req = make_request(f"{wid}-{s}", prompt_len=16, max_tokens=8, arrival_s=start,
                           workflow=WorkflowRef(wid, "coding", stage=s, workflow_deadline_ms=10_000,
                                                workflow_start_s=start))
        tracker.on_added(req, start)
        req.output_token_ids = [1] * 8
        req.status = req.status.FINISHED_STOPPED
        tracker.on_finished(req, start + t)
    tracker.close_idle(start + stage_times[-1] + 100)


def test_workflow_deadline_split_follows_the_matched_graph():
    tracker = WorkflowTracker(default_num_stages=4, idle_close_s=1.0)
    live = make_request("w-0", prompt_len=16, arrival_s=1000.0,
                        workflow=WorkflowRef("w", "coding", stage=0, workflow_deadline_ms=10_000))
    tracker.on_added(live, 1000.0)
    assert tracker.stage_deadline_s(live) == pytest.approx(1000.0 + 10.0 * 0.25)  # uniform without history
    for k in range(3):  # history: stage 0 takes 70% of the time, stage 1 the rest
        _close_workflow(tracker, f"old{k}", [7.0, 10.0])
    assert tracker.num_graphs("coding") == 3
    assert tracker.stage_deadline_s(live) == pytest.approx(1000.0 + 10.0 * 0.7)
    other_app = make_request("x-0", prompt_len=16, arrival_s=0.0,
                             workflow=WorkflowRef("x", "chat", stage=1, workflow_deadline_ms=8_000))
    tracker.on_added(other_app, 0.0)
    assert tracker.stage_deadline_s(other_app) == pytest.approx(8.0 * 0.5)


def test_workflow_members_share_one_key():
    sched = make_scheduler("tempo")
    now = sched.clock.now()
    ref = dict(application="coding", workflow_deadline_ms=5_000)
    a = make_request("a", prompt_len=4, max_tokens=4, arrival_s=now, workflow=WorkflowRef("w", stage=0, **ref))
    b = make_request("b", prompt_len=30, max_tokens=50, arrival_s=now, workflow=WorkflowRef("w", stage=0, **ref))
    sched.add_request(a)
    sched.add_request(b)
    assert sched.ticket("a").sched_key[1:-1] == sched.ticket("b").sched_key[1:-1]


def test_streaming_rt_decode_outranks_a_dense_deadline_prefill():
    """Density alone once let a short deadline prefill take the whole budget and skip a stream's
    decode; streams now rank in the urgency band, earliest next-token deadline first."""
    sched = make_scheduler("tempo", max_num_batched_tokens=8)
    now = sched.clock.now()
    sched.add_request(make_request("rt", prompt_len=8, max_tokens=50, service_class=RT, arrival_s=now))
    driver = make_driver(sched)
    driver.max_inflight = 1
    driver.send()
    driver.receive()  # rt's prompt is in, its first token out: it is streaming
    sched.add_request(make_request("dl", prompt_len=8, max_tokens=2, service_class=DL, deadline_ms=60_000,
                                   arrival_s=sched.clock.now()))
    plan = sched.schedule()
    assert [s.request_id for s in plan.scheduled] == ["rt", "dl"]
    assert {s.request_id: s.num_tokens for s in plan.scheduled} == {"rt": 1, "dl": 7}


def test_waiting_rt_ranks_by_first_token_deadline_until_it_has_passed():
    sched = make_scheduler("tempo")
    policy: TempoPolicy = sched.policy  # type: ignore[assignment]
    late = make_request("late", prompt_len=8, service_class=RT, ttft_ms=500, arrival_s=sched.clock.now())
    be = make_request("be", prompt_len=8, service_class=BE, arrival_s=sched.clock.now())
    sched.add_request(late)
    sched.add_request(be)
    sched.clock.advance(2.0)  # type: ignore[attr-defined]
    now = sched.clock.now()
    fresh = make_request("fresh", prompt_len=8, service_class=RT, ttft_ms=500, arrival_s=now)
    sched.add_request(fresh)
    assert policy.key(fresh, now) == (0, now + 0.5, 0.0)
    # `late` missed its TTFT: attainment is lost, so it competes on service-gain density.
    assert policy.key(late, now)[0] == 1 and policy.key(be, now)[0] == 1
    assert policy.key(fresh, now) < policy.key(late, now)


def test_penalty_100_makes_a_late_deadline_worth_almost_nothing():
    policy = TempoPolicy(unit_time_s=0.01)
    assert policy.pricing.p == 100.0
    on_time = make_request("a", prompt_len=8, max_tokens=10, service_class=DL, deadline_ms=1_000)
    late = make_request("b", prompt_len=8, max_tokens=10, service_class=DL, deadline_ms=95)  # needs ~0.1 s
    policy.on_added(on_time, 0.0)
    policy.on_added(late, 0.0)
    full, _ = policy.pricing.reward(on_time, 0.0)
    assert full == pytest.approx(8 + 8 * 10)
    assert policy.pricing.reward(late, 0.0)[0] < 0.01 * full  # (0.95)^100 ≈ 0.006


def _cold_deadline_key(other_tenants_length: int | None) -> tuple:
    """The key of a deadline request (1 s, ≈ 100 tokens at 10 ms a token) of a tenant with no
    finished requests, after another tenant's 25 requests of `other_tenants_length` tokens."""
    sched = make_scheduler("tempo", max_num_batched_tokens=4, policy_options={"unit_time_s": 0.01})
    if other_tenants_length is not None:
        for _ in range(25):
            sched.policy.lengths.predictor.observe("chat", 4, other_tenants_length)  # type: ignore[attr-defined]
    now = sched.clock.now()
    sched.add_request(make_request("d", prompt_len=4, max_tokens=200, service_class=DL, deadline_ms=1000,
                                   arrival_s=now, tenant="tool"))
    return sched.policy.key(sched.ticket("d").req, sched.clock.now())


def test_a_cold_tenants_deadline_work_keeps_the_benefit_of_the_doubt_unless_the_others_lengths_cannot_fit():
    unknown, short_elsewhere, long_elsewhere = _cold_deadline_key(None), _cold_deadline_key(50), _cold_deadline_key(500)
    # Nothing known, or the other tenants' median (50 tokens) fits: urgency band, and the same
    # latest start either way (its own tenant's lengths alone say when to start: none yet).
    assert unknown[0] == short_elsewhere[0] == 0 and unknown[1] == pytest.approx(short_elsewhere[1])
    # Their median (500 tokens, ≈ 5 s) cannot finish in 1 s: out of the urgency band. But its own
    # tenant has no lengths to price it on, and it could still finish if short: it ranks ahead of
    # every density-ranked request (beside aged work), so that it is served and its tenant learns.
    assert long_elsewhere[0] == 1 and long_elsewhere[1] == float("-inf")


def test_a_cold_tenants_doubted_deadline_work_is_served_before_best_effort_and_priced_once_warm():
    sched = make_scheduler("tempo", max_num_batched_tokens=4, policy_options={"unit_time_s": 0.01})
    predictor = sched.policy.lengths.predictor  # type: ignore[attr-defined]
    for _ in range(25):
        predictor.observe("batch", 4, 500)  # the other tenant's outputs: far too long for 1 s
    now = sched.clock.now()
    sched.add_request(make_request("be", prompt_len=4, max_tokens=10, service_class=BE, arrival_s=now))
    sched.add_request(make_request("d", prompt_len=4, max_tokens=200, service_class=DL, deadline_ms=1000,
                                   arrival_s=now, tenant="tool"))
    key, d = sched.policy.key, sched.ticket("d").req
    assert key(d, now) < key(sched.ticket("be").req, now)
    # Not yet lost, but even an output ending with its next token (10 ms a step) would be late:
    # no head start, it competes on density.
    assert key(d, now + 0.995)[0] == 1 and key(d, now + 0.995)[1] != float("-inf")
    # Once its own tenant's lengths exist (short), the urgency band by its own latest start.
    for _ in range(25):
        predictor.observe("tool", 4, 5)
    assert key(d, now)[0] == 0


def _growth_victims(policy: str) -> tuple[list[str], int, int]:
    # 24 blocks of 4 tokens: the long request alone needs 18 at its end (32 + 40 tokens), the
    # short one 10 (8 + 30), so once both have grown one must give its blocks up.
    sched = make_scheduler(policy, num_blocks=24, max_num_batched_tokens=64)
    now = sched.clock.now()
    sched.add_request(make_request("long", prompt_len=32, max_tokens=40, arrival_s=now))
    sched.add_request(make_request("short", prompt_len=8, max_tokens=30, arrival_s=now + 0.001))
    driver = make_driver(sched)
    victims: list[str] = []
    driver.on_plan = lambda plan: victims.extend(plan.preempted_request_ids)
    driver.run()
    return victims, len(driver.tokens_of("long")), len(driver.tokens_of("short"))


def test_best_effort_growth_takes_kv_only_from_best_effort_work_that_arrived_later():
    """Density ranks the short request first; its growth used to preempt the long request that
    arrived before it (a big checkpoint, recomputed once the host tier had evicted it). Now the
    short one, refused that victim, yields its own blocks, as fcfs's order would have it."""
    victims, long_tokens, short_tokens = _growth_victims("tempo")
    assert victims == ["short"] and (long_tokens, short_tokens) == (40, 30)
    assert _growth_victims("fcfs")[0] == ["short"]
    policy = TempoPolicy()
    early = make_request("early", arrival_s=1.0)
    late = make_request("late", arrival_s=2.0)
    stream = make_request("rt", service_class=RT, ttft_ms=1000, tpot_ms=100, arrival_s=3.0)
    assert not policy.growth_may_preempt(late, early) and policy.growth_may_preempt(early, late)
    assert policy.growth_may_preempt(stream, early)  # RT still takes best-effort blocks
