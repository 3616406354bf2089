"""How well the start-up step-time model predicts the steps the worker then serves: every
`every` steps, one log line with the median ratio of measured to predicted time, for the whole
step (plan received to result sent, what the scheduler's clock sees) and for the forward pass and
sampling alone (what the calibration timed). The gap between the two is the shell's share
(decoding the plan, leases, encoding, the event loop); the gap between the second and 1 is the fit's."""

from __future__ import annotations

import logging
from statistics import median

from llmserve.step_cost import StepCost
from llmserve.types import StepTiming

logger = logging.getLogger(__name__)


class FitWatch:
    def __init__(self, cost: StepCost, worker_id: str, every: int = 500) -> None:
        self._cost = cost
        self._worker_id = worker_id
        self._every = every
        self._total: list[float] = []
        self._compute: list[float] = []

    def observe(self, timing: StepTiming, total_ns: int) -> None:
        predicted = self._cost.step_time(timing.num_prefill_tokens, timing.num_decode_seqs, timing.num_kv_tokens_read)
        if predicted <= 0 or not (timing.num_prefill_tokens or timing.num_decode_seqs):
            return
        self._total.append(total_ns / 1e9 / predicted)
        self._compute.append((timing.forward_ns + timing.sample_ns) / 1e9 / predicted)
        if len(self._total) >= self._every:
            self.flush()

    def flush(self) -> None:
        if not self._total:
            return
        logger.info("worker %s: the last %d steps took %.2fx the start-up model's prediction (median; forward and "
                    "sampling alone %.2fx)", self._worker_id, len(self._total), median(self._total), median(self._compute))
        self._total.clear()
        self._compute.clear()
