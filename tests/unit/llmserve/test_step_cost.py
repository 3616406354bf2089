"""The shared step-time fit: exact without noise, non-negative, zero for a feature never seen."""

from __future__ import annotations

import random

import pytest

from llmserve.step_cost import StepCost, StepSample, fit_step_cost

TRUE = StepCost(0.004, 2.5e-5, 1.2e-4, 3.0e-8)


def _samples(n: int, cost: StepCost = TRUE, seed: int = 0, decode: bool = True) -> list[StepSample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prefill = rng.choice([0, rng.randint(1, 2048)])
        seqs = rng.randint(0 if prefill else 1, 64) if decode else 0
        prefill = prefill or (0 if seqs else 1)
        kv = seqs * rng.randint(16, 4096) + prefill * rng.randint(1, 2)
        out.append(StepSample(prefill, seqs, kv, cost.step_time(prefill, seqs, kv)))
    return out


def test_fit_recovers_known_coefficients_without_noise():
    fit = fit_step_cost(_samples(50))
    assert fit.cost.a_s == pytest.approx(TRUE.a_s, rel=1e-6)
    assert fit.cost.b_s_per_prefill_token == pytest.approx(TRUE.b_s_per_prefill_token, rel=1e-6)
    assert fit.cost.c_s_per_decode_seq == pytest.approx(TRUE.c_s_per_decode_seq, rel=1e-6)
    assert fit.cost.d_s_per_kv_token == pytest.approx(TRUE.d_s_per_kv_token, rel=1e-6)
    assert fit.num_samples == 50 and fit.r2 == pytest.approx(1.0) and fit.median_rel_error < 1e-9


def test_a_feature_never_seen_fits_to_zero_and_the_rest_exactly():
    fit = fit_step_cost(_samples(30, decode=False))
    assert fit.cost.c_s_per_decode_seq == 0.0
    assert fit.cost.b_s_per_prefill_token + fit.cost.d_s_per_kv_token * 1.5 == pytest.approx(
        TRUE.b_s_per_prefill_token + TRUE.d_s_per_kv_token * 1.5, rel=0.05)


def test_a_slope_that_would_be_negative_is_pinned_to_zero():
    # Steps that get cheaper with more KV read: no model may predict that; the others refit.
    rows = [StepSample(p, s, kv, 0.01 + 1e-5 * p + 1e-4 * s - 1e-9 * kv)
            for p, s, kv in ((10, 1, 100), (200, 4, 5000), (0, 16, 40000), (50, 2, 900), (0, 1, 20000), (400, 0, 400))]
    cost = fit_step_cost(rows).cost
    assert cost.d_s_per_kv_token == 0.0
    assert min(cost.a_s, cost.b_s_per_prefill_token, cost.c_s_per_decode_seq) >= 0.0


def test_too_few_samples_is_an_error():
    with pytest.raises(ValueError, match="at least 4"):
        fit_step_cost(_samples(3))
