"""What the core sends to a worker each step (BatchPlan) and what comes back (StepResult), plus the
per-request events the core emits (RequestOutput). Frozen messages; convert.py maps them to protos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from scheduler_svc.core.request import FinishReason, SamplingParams, ServiceClass


@dataclass(frozen=True, slots=True)
class NewRequestData:
    """A request the worker has not seen (new, or re-admitted after a recompute preemption)."""

    request_id: str
    # Every known token: the prompt, then the outputs generated before a preemption.
    token_ids: tuple[int, ...]
    num_prompt_tokens: int
    sampling: SamplingParams
    service_class: ServiceClass
    # Outputs already sampled: the worker's generator skips this many draws.
    num_output_tokens: int
    # > 0: resume from the host-tier checkpoint, whose KV covers this many tokens (not recomputed).
    num_computed_tokens: int = 0


class ScheduledRequest(NamedTuple):
    """Work for one request in one step."""

    request_id: str
    num_tokens: int  # a prefill chunk, or 1 for a decode
    num_computed_tokens: int  # KV tokens before this step (the worker checks its own count)
    sample: bool  # sample a token at the end of this chunk


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """One step. The worker applies, in this order: drop finished and preempted requests (release
    their KV), create new requests, then compute `scheduled`."""

    step_id: int
    new_requests: tuple[NewRequestData, ...] = ()
    scheduled: tuple[ScheduledRequest, ...] = ()
    finished_request_ids: tuple[str, ...] = ()
    preempted_request_ids: tuple[str, ...] = ()
    # Of the preempted, those whose KV the worker saves to the host tier first (issue 4).
    checkpoint_request_ids: tuple[str, ...] = ()
    # Requests gone from the scheduler whose host-tier checkpoints the worker drops.
    drop_checkpoint_request_ids: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """True when there is nothing to send (no work and no ids): the core did not count it."""
        return not (self.scheduled or self.finished_request_ids or self.preempted_request_ids or self.new_requests
                    or self.drop_checkpoint_request_ids)

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


@dataclass(frozen=True, slots=True)
class StepTiming:
    """Timings and sizes of one step, as the worker measured them."""

    forward_ns: int = 0
    sample_ns: int = 0
    kv_ns: int = 0
    total_ns: int = 0
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    num_kv_tokens_read: int = 0
    # Host-tier traffic (issue 4): bytes copied for checkpoints and restored, their wall times,
    # and tokens recomputed because a restore failed.
    checkpoint_bytes: int = 0
    restore_bytes: int = 0
    checkpoint_ns: int = 0
    restore_ns: int = 0
    num_recomputed_tokens: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one plan: one (request_id, token_id) per scheduled request with sample=True."""

    step_id: int
    sampled: tuple[tuple[str, int], ...] = ()
    timing: StepTiming | None = None
    error: str = ""
    # Resumed requests whose prefix the worker recomputed because the restore failed.
    restore_failed_request_ids: tuple[str, ...] = ()
    # Requests whose checkpoint the store refused or lost (re-admit them by recompute).
    checkpoint_failed_request_ids: tuple[str, ...] = ()


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
