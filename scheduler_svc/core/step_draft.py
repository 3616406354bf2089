"""The step being planned, as policies see it while `schedule()` fills it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class StepDraft:
    """Shape of the step so far (what a cost model prices) and the budget left.

    `num_steps_ahead` is the number of plans still in flight: this step starts after they run.
    """

    now: float
    step_id: int
    num_steps_ahead: int
    token_budget: int
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    num_kv_tokens: int = 0
    num_scheduled: int = 0
    # Earliest deadline of a token that this step samples for a deadline-bound request (policies
    # that guard step time set it through `note_deadline`).
    tightest_deadline_s: float = math.inf
    # The same for work that is not on-time RT (`SloStep`: the streams' slack bank).
    filler_deadline_s: float = math.inf

    def add(self, num_computed_tokens: int, num_tokens: int, is_decode: bool) -> None:
        if is_decode:
            self.num_decode_seqs += 1
        else:
            self.num_prefill_tokens += num_tokens
        # Attention reads the whole context of every scheduled token's request.
        self.num_kv_tokens += num_computed_tokens + num_tokens
        self.num_scheduled += 1
        self.token_budget -= num_tokens

    def note_deadline(self, deadline_s: float) -> None:
        if deadline_s < self.tightest_deadline_s:
            self.tightest_deadline_s = deadline_s
        if deadline_s < self.filler_deadline_s:
            self.filler_deadline_s = deadline_s

    def note_filler_deadline(self, deadline_s: float) -> None:
        if deadline_s < self.filler_deadline_s:
            self.filler_deadline_s = deadline_s
