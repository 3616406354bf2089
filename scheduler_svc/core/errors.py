"""The scheduler core's own domain errors: each subclasses the `llmserve.errors` class whose
gRPC status it gets, so the one status table (`llmserve.runtime.errors`) needs no second entry."""

from __future__ import annotations

from llmserve.errors import CapacityError


class TtftInfeasibleError(CapacityError):
    """A real-time request that the cost model says cannot meet its TTFT SLO here and now."""

    def __init__(self, predicted_ttft_s: float, ttft_slo_s: float) -> None:
        super().__init__(f"predicted TTFT {predicted_ttft_s * 1000:.0f} ms exceeds the request's "
                         f"{ttft_slo_s * 1000:.0f} ms SLO: retry later or elsewhere",
                         retry_after_s=predicted_ttft_s - ttft_slo_s)
        self.predicted_ttft_s = predicted_ttft_s
        self.ttft_slo_s = ttft_slo_s
