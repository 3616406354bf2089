"""Usage accounting with an injected clock: TTFT, mean TPOT and per-class SLO attainment."""

from __future__ import annotations

import pytest

from gateway.core.types import FinishReason, ServiceClass, Slo
from gateway.core.usage import UsageTracker

RT = Slo(ServiceClass.REAL_TIME, ttft_ms=100.0, tpot_ms=20.0)
DL = Slo(ServiceClass.DEADLINE, deadline_ms=1000.0)
BE = Slo(ServiceClass.BEST_EFFORT)


def tracker(slo: Slo, times: list[float], counts: list[int] | None = None) -> UsageTracker:
    t = UsageTracker(arrival_s=10.0, slo=slo, prompt_tokens=7)
    for time_s, n in zip(times, counts or [1] * len(times)):
        t.on_tokens(n, time_s)
    return t


def test_ttft_and_mean_tpot() -> None:
    usage = tracker(BE, [10.05, 10.08, 10.13]).finish(FinishReason.LENGTH, 10.13)
    assert usage.prompt_tokens == 7 and usage.completion_tokens == 3
    assert usage.ttft_ms == pytest.approx(50.0)
    assert usage.mean_tpot_ms == pytest.approx(40.0)  # (130 - 50) / 2


def test_one_token_has_zero_tpot_and_tokens_of_one_event_share_its_time() -> None:
    assert tracker(BE, [10.2]).finish(FinishReason.STOP, 10.2).mean_tpot_ms == 0.0
    usage = tracker(BE, [10.1, 10.3], counts=[1, 3]).finish(FinishReason.STOP, 10.3)
    assert usage.completion_tokens == 4
    assert usage.mean_tpot_ms == pytest.approx(200.0 / 3)


def test_real_time_attained_when_every_token_is_on_time() -> None:
    # Token i is due at 100 + 20 i ms: 0.095, 0.115, 0.135 are all early.
    assert tracker(RT, [10.095, 10.115, 10.135]).finish(FinishReason.LENGTH, 10.14).slo_attained


def test_real_time_missed_when_a_late_token_is_late() -> None:
    # Token 1 (due at 120 ms) arrives at 150 ms; a burst after it keeps the mean TPOT in target.
    times = [10.01, 10.15] + [10.15 + 0.001 * k for k in range(1, 11)]
    usage = tracker(RT, times).finish(FinishReason.LENGTH, times[-1])
    assert not usage.slo_attained
    assert usage.mean_tpot_ms < RT.tpot_ms


def test_real_time_missed_on_late_first_token() -> None:
    assert not tracker(RT, [10.2]).finish(FinishReason.STOP, 10.2).slo_attained


def test_deadline_is_about_the_finish_time() -> None:
    assert tracker(DL, [10.5, 10.9]).finish(FinishReason.STOP, 10.95).slo_attained
    assert not tracker(DL, [10.5, 10.9]).finish(FinishReason.STOP, 11.2).slo_attained


def test_best_effort_attained_once_finished_but_not_when_cancelled_or_failed() -> None:
    assert tracker(BE, [100.0]).finish(FinishReason.LENGTH, 100.0).slo_attained
    assert not tracker(BE, [10.1]).finish(FinishReason.CANCELLED, 10.1).slo_attained
    assert not tracker(RT, [10.01]).finish(FinishReason.ERROR, 10.01).slo_attained


def test_no_tokens() -> None:
    usage = tracker(BE, []).finish(FinishReason.CANCELLED, 10.5)
    assert (usage.completion_tokens, usage.ttft_ms, usage.mean_tpot_ms) == (0, 0.0, 0.0)
