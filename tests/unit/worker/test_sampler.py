"""Sampler: greedy is argmax, a request's tokens depend only on its own (seed, index) and
logits, top-k / top-p restrict the support, and draws follow the distribution."""

from __future__ import annotations

import math

import pytest
import torch

from worker_svc.core.sampler import argmax_rows, sample, uniform
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


# Temperatures down to the float64 denormals: float32's smallest normal and denormal, 1e-38 (which
# overflowed `logits / T` in float32: every token came out as the last id), 1e-30, float64's.
TINY_TEMPERATURES = (1e-30, 1.1754943508222875e-38, 1e-38, 1.401298464324817e-45, 1e-300, 5e-324)


def _positive_and_negative_logits(rows: int, vocab: int) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(11)) * 8 + 3


@pytest.mark.parametrize("temperature", TINY_TEMPERATURES)
@pytest.mark.parametrize("filters", [{}, {"top_k": 40}, {"top_p": 0.9}, {"top_k": 5, "top_p": 0.5}])
def test_a_tiny_temperature_samples_the_argmax(temperature: float, filters: dict) -> None:
    logits = _positive_and_negative_logits(4, 49152)
    params = [SamplingParams(max_tokens=16, temperature=temperature, seed=s, **filters) for s in range(4)]
    for index in range(3):
        assert sample(logits, params, [index] * 4) == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("temperature", [1e-38, 5e-324])
def test_a_tiny_temperature_shares_tied_maxima_evenly(temperature: float) -> None:
    logits = _logits([0.2, 0.4, 0.4])[None]  # tokens 1 and 2 tie for the maximum
    n = 2000
    drawn = [sample(logits, [SamplingParams(max_tokens=16, temperature=temperature, seed=9)], [i])[0] for i in range(n)]
    counts = torch.bincount(torch.tensor(drawn), minlength=16)
    assert counts[1] + counts[2] == n
    assert abs(counts[1].item() / n - 0.5) < 0.05


@pytest.mark.parametrize("temperature", [1e6, 1e30, 3.4028234663852886e38])
def test_a_huge_temperature_is_uniform(temperature: float) -> None:
    vocab = 8
    logits = (torch.arange(vocab, dtype=torch.float32) * 3.0)[None]
    n = 4000
    drawn = [sample(logits, [SamplingParams(max_tokens=16, temperature=temperature, seed=2)], [i])[0] for i in range(n)]
    freq = torch.bincount(torch.tensor(drawn), minlength=vocab).float() / n
    assert torch.allclose(freq, torch.full((vocab,), 1 / vocab), atol=0.03), freq


def test_temperature_still_sharpens_and_flattens() -> None:
    """Away from the extremes the distribution is softmax(logits / T): T = 0.5 squares and
    renormalizes the probabilities, T = 2 takes their square roots."""
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = _logits(probs.tolist())[None]
    n = 4000
    for temperature, expected in ((0.5, probs**2), (2.0, probs**0.5)):
        drawn = [sample(logits, [SamplingParams(max_tokens=16, temperature=temperature, seed=5)], [i])[0]
                 for i in range(n)]
        freq = torch.bincount(torch.tensor(drawn), minlength=16).float()[:3] / n
        assert torch.allclose(freq, expected / expected.sum(), atol=0.03), (temperature, freq)


@pytest.mark.parametrize("vocab", [1, 7, 512, 513, 1000, 49_152, 49_153])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_rows_is_torch_argmax_exactly(vocab: int, dtype: torch.dtype) -> None:
    """The blocked argmax of the greedy path gives torch.argmax's index on every row: random rows,
    rows of bfloat16-rounded values with many ties (the first tied maximum), the maximum in the
    tail block, at the ends, -inf and NaN entries, and a gathered (non-contiguous source) batch."""
    gen = torch.Generator().manual_seed(vocab)
    rows = [torch.randn(vocab, generator=gen),
            torch.randint(0, 3, (vocab,), generator=gen).float(),  # ties everywhere
            torch.full((vocab,), -float("inf")),
            torch.zeros(vocab)]
    for col in {0, vocab - 1, vocab // 2, max(0, vocab - 300)}:
        row = torch.randn(vocab, generator=gen)
        row[col] = 50.0
        rows.append(row)
        tie = torch.randn(vocab, generator=gen)
        tie[col] = tie[min(vocab - 1, col + 256)] = tie[0] = 40.0
        rows.append(tie)
        nan = torch.randn(vocab, generator=gen)
        nan[col] = float("nan")
        nan[vocab - 1] = float("nan")
        rows.append(nan)
    logits = torch.stack(rows).to(dtype)
    assert torch.equal(argmax_rows(logits), logits.argmax(dim=-1))
    assert torch.equal(argmax_rows(logits.float()), logits.float().argmax(dim=-1))
    picked = logits[[1, 0, 3]]
    assert torch.equal(argmax_rows(picked), picked.argmax(dim=-1))
    assert argmax_rows(logits[:0]).shape == (0,)


def test_greedy_rows_of_a_mixed_batch_use_the_same_argmax() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 49_152, generator=gen).to(torch.bfloat16).float()  # bf16-rounded: ties occur
    greedy, hot = SamplingParams(max_tokens=4, temperature=0.0), SamplingParams(max_tokens=4, temperature=0.8, seed=5)
    params = [greedy, hot, greedy, greedy, hot, greedy]
    tokens = sample(logits, params, list(range(6)))
    expected = logits.argmax(dim=-1).tolist()
    assert [tokens[r] for r in (0, 2, 3, 5)] == [expected[r] for r in (0, 2, 3, 5)]
