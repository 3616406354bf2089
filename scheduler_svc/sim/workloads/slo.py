"""SLO assignment: a base SLO scaled by tiers, as in the Tempo artifact, where request k gets
base × (k mod tiers + 1), so the tiers 1×..tiers× come in equal shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SloSpec:
    """Base SLO values (tier 1) and the number of tiers."""

    ttft_ms: float = 1000.0
    tpot_ms: float = 100.0
    deadline_ms: float = 10000.0
    tiers: int = 4

    def __post_init__(self) -> None:
        if min(self.ttft_ms, self.tpot_ms, self.deadline_ms) <= 0 or self.tiers < 1:
            raise ValueError("SLO base values must be > 0 and tiers >= 1")

    def tier(self, k: int) -> int:
        """The multiplier of the k-th request (or workflow) of a stream: k mod tiers + 1."""
        return k % self.tiers + 1

    def real_time(self, k: int) -> tuple[float, float]:
        """(ttft_ms, tpot_ms) of the k-th real-time request."""
        m = self.tier(k)
        return self.ttft_ms * m, self.tpot_ms * m

    def deadline(self, k: int) -> float:
        """deadline_ms of the k-th deadline request."""
        return self.deadline_ms * self.tier(k)
