"""Usage accounting and SLO attainment, measured at the gateway with an injected clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.types import FinishReason, ServiceClass, Slo, Usage


@dataclass(slots=True)
class UsageTracker:
    """Records when each output token reached the gateway (seconds on the injected clock, the same
    clock as `arrival_s`). Tokens that arrive in one event share its time."""

    arrival_s: float
    slo: Slo
    prompt_tokens: int
    token_times: list[float] = field(default_factory=list)
    cached_prompt_tokens: int = 0  # what the scheduler's last event says (prefix cache hits)

    def on_tokens(self, count: int, now: float) -> None:
        self.token_times.extend([now] * count)

    def finish(self, reason: FinishReason, now: float) -> Usage:
        """The request's usage. TTFT: arrival to the first token; mean TPOT: the average gap after
        the first token (0 with one token)."""
        times = self.token_times
        ttft_ms = (times[0] - self.arrival_s) * 1e3 if times else 0.0
        mean_tpot_ms = (times[-1] - times[0]) * 1e3 / (len(times) - 1) if len(times) > 1 else 0.0
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(times),
            ttft_ms=ttft_ms,
            mean_tpot_ms=mean_tpot_ms,
            slo_attained=self._attained(reason, now),
            cached_prompt_tokens=self.cached_prompt_tokens,
        )

    def _attained(self, reason: FinishReason, now: float) -> bool:
        # A cancelled or failed request did not get its service, whatever its timing so far.
        if reason not in (FinishReason.STOP, FinishReason.LENGTH):
            return False
        if self.slo.service_class == ServiceClass.REAL_TIME:
            ttft_s = (self.slo.ttft_ms or 0.0) / 1e3
            tpot_s = (self.slo.tpot_ms or 0.0) / 1e3
            return all(t - self.arrival_s <= ttft_s + i * tpot_s for i, t in enumerate(self.token_times))
        if self.slo.service_class == ServiceClass.DEADLINE:
            return now - self.arrival_s <= (self.slo.deadline_ms or 0.0) / 1e3
        return True
