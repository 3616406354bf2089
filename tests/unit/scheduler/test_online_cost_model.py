"""OnlineLinearCostModel: refits step-time coefficients from measured steps; bros learns with it."""

from __future__ import annotations

import random

import pytest

from scheduler_svc.core import LinearCostModel, ServiceClass, StepResult
from scheduler_svc.core.online_cost_model import OnlineLinearCostModel, linear_prior
from scheduler_svc.core.plan import StepTiming
from scheduler_svc.core.policy.bros import BrosPolicy
from tests.factories import make_request, make_scheduler

TRUE = LinearCostModel(a_s=0.020, b_s_per_prefill_token=4e-4, c_s_per_decode_seq=2e-3, d_s_per_kv_token=1e-6)


def _coefficients(model) -> tuple[float, float, float, float]:
    return (model.a_s, model.b_s_per_prefill_token, model.c_s_per_decode_seq, model.d_s_per_kv_token)


def _feed(model: OnlineLinearCostModel, truth: LinearCostModel, steps: int, seed: int = 0,
          noise: float = 0.05, decode_only: bool = False) -> None:
    rng = random.Random(seed)
    for _ in range(steps):
        prefill = 0 if decode_only or rng.random() < 0.5 else rng.randint(1, 256)
        decode = rng.randint(1, 32)
        kv = decode * rng.randint(16, 1024) + prefill * rng.randint(1, 4)
        seconds = truth.step_time(prefill, decode, kv) * (1 + rng.gauss(0.0, noise))
        model.observe(prefill, decode, kv, seconds)


def test_recovers_known_coefficients_from_noisy_steps():
    model = OnlineLinearCostModel()  # the built-in prior is far off (small GPU vs this "CPU")
    _feed(model, TRUE, steps=400)
    assert model.num_fits > 0
    for got, want in zip(_coefficients(model), _coefficients(TRUE)):
        assert got == pytest.approx(want, rel=0.15)
    # And predicts a step it never saw to within the noise.
    assert model.step_time(128, 16, 8000) == pytest.approx(TRUE.step_time(128, 16, 8000), rel=0.05)


def test_stays_at_the_prior_with_no_data():
    prior = LinearCostModel(0.01, 1e-4, 1e-3, 1e-7)
    model = OnlineLinearCostModel(prior=prior)
    assert _coefficients(model) == _coefficients(prior)
    assert model.current == prior
    # Steps without work or without a real time carry nothing.
    assert not model.observe(0, 0, 0, 0.5)
    assert not model.observe(4, 1, 10, 0.0)
    assert not model.observe(4, 1, 10, float("nan"))
    assert model.num_observed == 0 and _coefficients(model) == _coefficients(prior)


def test_keeps_the_prior_for_a_coefficient_the_window_does_not_excite():
    prior = LinearCostModel(0.01, 1e-4, 1e-3, 1e-7)
    model = OnlineLinearCostModel(prior=prior)
    _feed(model, TRUE, steps=300, decode_only=True)  # never a prefill token
    assert model.b_s_per_prefill_token == prior.b_s_per_prefill_token
    assert model.c_s_per_decode_seq == pytest.approx(TRUE.c_s_per_decode_seq, rel=0.2)


def test_never_goes_negative():
    model = OnlineLinearCostModel(refit_every=1)
    rng = random.Random(3)
    for _ in range(200):
        # Bigger batches run *faster* here (anti-correlated noise): a free fit would go negative.
        decode = rng.randint(1, 64)
        prefill = rng.randint(0, 64)
        model.observe(prefill, decode, decode * 100, max(1e-4, 0.5 - 0.007 * decode + rng.gauss(0, 0.01)))
        assert min(_coefficients(model)) >= 0.0
        assert model.step_time(prefill, decode + 1, decode * 100) >= model.step_time(prefill, decode, decode * 100)


def test_follows_a_change_in_the_machine_within_a_window():
    model = OnlineLinearCostModel(window=128)
    _feed(model, TRUE, steps=200, seed=1)
    slower = LinearCostModel(*(2 * c for c in _coefficients(TRUE)))
    _feed(model, slower, steps=200, seed=2)
    assert model.step_time(64, 8, 4000) == pytest.approx(slower.step_time(64, 8, 4000), rel=0.1)


def test_rejects_bad_settings_and_non_linear_priors():
    with pytest.raises(ValueError, match="window"):
        OnlineLinearCostModel(window=2)
    with pytest.raises(ValueError, match="online_cost_model=False"):
        linear_prior(object())  # type: ignore[arg-type]


def test_bros_learns_by_default_from_step_timings():
    prior = LinearCostModel(0.010, 1e-3, 1e-3, 0.0)
    policy = BrosPolicy(cost_model=prior)
    assert policy.online_cost is not None and policy.online_cost.prior == prior
    assert BrosPolicy(cost_model=prior, online_cost_model=False).online_cost is None
    rng = random.Random(5)
    for _ in range(100):
        decode, prefill = rng.randint(1, 16), rng.randint(0, 64)
        kv = decode * 200 + prefill
        ns = int(TRUE.step_time(prefill, decode, kv) * 1e9)
        policy.observe_step(StepTiming(total_ns=ns, num_prefill_tokens=prefill, num_decode_seqs=decode,
                                       num_kv_tokens_read=kv), now=0.0)
    assert policy.cost.step_time(32, 8, 1632) == pytest.approx(TRUE.step_time(32, 8, 1632), rel=0.02)


def test_bros_guard_uses_the_learnt_model():
    # Prior: 10 ms + 1 ms/token. The worker reports 10 ms + 0.1 ms/token steps; after learning,
    # ten times more BE prefill fits in the RT stream's step (its TPOT, 40 ms).
    prior = LinearCostModel(a_s=0.010, b_s_per_prefill_token=0.001, c_s_per_decode_seq=0.001, d_s_per_kv_token=0.0)
    real = LinearCostModel(a_s=0.010, b_s_per_prefill_token=0.0001, c_s_per_decode_seq=0.001, d_s_per_kv_token=0.0)
    sched = make_scheduler("bros", max_num_batched_tokens=400, max_model_len=512, num_blocks=128,
                           policy_options={"cost_model": prior, "min_prefill_chunk": 4, "slack_bank_tpots": 0.0})
    for i in range(64):
        sched.policy.observe_step(StepTiming(total_ns=int(real.step_time(i % 50, 1 + i % 3, 0) * 1e9),
                                             num_prefill_tokens=i % 50, num_decode_seqs=1 + i % 3), now=0.0)
    now = sched.clock.now()
    rt = make_request("rt", prompt_len=4, max_tokens=20, service_class=ServiceClass.REAL_TIME, ttft_ms=5,
                      tpot_ms=40, arrival_s=now)
    sched.add_request(rt)
    p0 = sched.schedule()
    sched.update(StepResult(p0.step_id, (("rt", 7),)))
    sched.add_request(make_request("be", prompt_len=400, max_tokens=4, service_class=ServiceClass.BEST_EFFORT,
                                   arrival_s=now))
    p1 = sched.schedule()
    by_id = {s.request_id: s for s in p1.scheduled}
    # The step lasts at most the stream's TPOT (40 ms). With the prior: 10 + 1 + 1·m ≤ 40 -> m = 29.
    # Learnt: 10 + 1 + 0.1·m ≤ 40 -> m ≈ 290.
    assert 250 <= by_id["be"].num_tokens <= 310
