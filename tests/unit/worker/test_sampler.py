"""Sampler: greedy is argmax, a request's tokens depend only on its own (seed, index) and
logits, top-k / top-p restrict the support, and draws follow the distribution."""

from __future__ import annotations

import math

import torch

from worker_svc.core.sampler import sample, uniform
from llmserve.types import SamplingParams


def _logits(probs: list[float], vocab: int = 16) -> torch.Tensor:
    row = torch.full((vocab,), -1e9)
    row[: len(probs)] = torch.tensor([math.log(p) for p in probs])
    return row


def test_greedy_is_argmax() -> None:
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    tokens = sample(logits, [SamplingParams(max_tokens=16, temperature=0.0)] * 5, [0] * 5)
    assert tokens == logits.argmax(dim=-1).tolist()


def test_uniform_is_a_deterministic_counter_generator() -> None:
    assert uniform(7, 3) == uniform(7, 3)
    draws = {uniform(7, i) for i in range(1000)}
    assert len(draws) == 1000 and all(0.0 <= d < 1.0 for d in draws)
    assert uniform(7, 0) != uniform(8, 0)


def test_tokens_do_not_depend_on_batch_mates() -> None:
    gen = torch.Generator().manual_seed(1)
    mine = torch.randn(1, 100, generator=gen)
    mates = torch.randn(6, 100, generator=gen)
    me = SamplingParams(max_tokens=16, temperature=0.9, seed=1234)
    alone = [sample(mine, [me], [i])[0] for i in range(20)]
    mate_params = [
        SamplingParams(max_tokens=16, temperature=0.0),
        SamplingParams(max_tokens=16, temperature=1.3, top_k=5, seed=9),
        SamplingParams(max_tokens=16, temperature=0.7, top_p=0.5, seed=10),
        SamplingParams(max_tokens=16, seed=11),
        SamplingParams(max_tokens=16, temperature=2.0, seed=12),
        SamplingParams(max_tokens=16, temperature=1.0, top_k=3, top_p=0.9, seed=13),
    ]
    for i in range(20):
        for position in (0, 3, 6):  # my row at the start, middle, end of the batch
            batch = torch.cat([mates[:position], mine, mates[position:]])
            params = mate_params[:position] + [me] + mate_params[position:]
            draws = list(range(100, 100 + position)) + [i] + list(range(200, 200 + 6 - position))
            assert sample(batch, params, draws)[position] == alone[i]
    assert len(set(alone)) > 3  # it does sample, not collapse to one token


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    logits = torch.zeros(1, 1000)  # uniform over 1000 tokens
    run = lambda seed: [sample(logits, [SamplingParams(max_tokens=16, seed=seed)], [i])[0] for i in range(10)]  # noqa: E731
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_draws_follow_the_distribution() -> None:
    logits = _logits([0.5, 0.3, 0.2])[None]
    n = 4000
    counts = torch.bincount(torch.tensor([sample(logits, [SamplingParams(max_tokens=16, seed=3)], [i])[0] for i in range(n)]),
                            minlength=16)
    freq = counts.float() / n
    assert torch.allclose(freq[:3], torch.tensor([0.5, 0.3, 0.2]), atol=0.03)
    assert counts[3:].sum() == 0


def test_top_k_restricts_support_to_the_k_most_likely() -> None:
    logits = _logits([0.1, 0.4, 0.05, 0.3, 0.15])[None]
    seen = {sample(logits, [SamplingParams(max_tokens=16, top_k=2, seed=4)], [i])[0] for i in range(300)}
    assert seen == {1, 3}


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    logits = _logits([0.15, 0.5, 0.05, 0.3])[None]
    # Sorted: 0.5, 0.3, 0.15, 0.05. Mass before 0.15 is 0.8 >= 0.7: only {1, 3} stay.
    seen = {sample(logits, [SamplingParams(max_tokens=16, top_p=0.7, seed=5)], [i])[0] for i in range(300)}
    assert seen == {1, 3}
    # A tiny p still keeps the most likely token.
    assert {sample(logits, [SamplingParams(max_tokens=16, top_p=1e-6, seed=5)], [i])[0] for i in range(50)} == {1}


def test_low_temperature_concentrates_on_the_mode() -> None:
    logits = _logits([0.4, 0.35, 0.25])[None]
    cold = [sample(logits, [SamplingParams(max_tokens=16, temperature=0.02, seed=6)], [i])[0] for i in range(200)]
    assert cold.count(0) >= 195  # p(mode) = 0.998 at this temperature
