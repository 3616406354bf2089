"""What the core sends to a worker each step (BatchPlan) and what comes back (StepResult): the
shared messages of `llmserve.plan`, re-exported under the names the core uses; plus the
per-request events the core emits (RequestOutput). convert.py maps them to protos.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.plan import BatchPlan, NewRequest, SampledToken, ScheduledRequest, StepErrorCode, StepResult
from llmserve.types import FinishReason, StepTiming

# The core's older name of a new request in a plan (positional order unchanged).
NewRequestData = NewRequest

__all__ = ["BatchPlan", "NewRequest", "NewRequestData", "RequestOutput", "SampledToken", "ScheduledRequest",
           "StepErrorCode", "StepResult", "StepTiming"]


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """New tokens of one request; `finish_reason` is set on its last output only. The token that
    ended a request (EOS or a stop token id) is included in `new_token_ids`."""

    request_id: str
    new_token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    num_preemptions: int = 0
    error_message: str = ""
    num_cached_tokens: int = 0  # prompt tokens its last admission took from the prefix cache
