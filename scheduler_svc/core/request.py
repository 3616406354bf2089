"""Domain types of a request: its class, sampling parameters, SLO, workflow membership, and the
`Request` state that the scheduler core owns from `add_request` until the request finishes.

`ServiceClass`, `FinishReason` and `SamplingParams` are the shared ones (`llmserve.types`). Client
input is checked by the gateway and the Submit contract by `scheduler_svc/convert.py`; the core
checks only its own capacity (context length, KV capacity, queue length). Stop strings are the
gateway's business and do not appear here. The true output length of a request does not exist in
the core: policies see only what has been generated so far.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from llmserve.types import FinishReason, SamplingParams, ServiceClass

__all__ = ["FINISHED_STATUS", "FinishReason", "Request", "RequestStatus", "SamplingParams", "ServiceClass", "Slo",
           "WorkflowRef"]


class RequestStatus(enum.IntEnum):
    """Ordered: every status after PREEMPTED is a finished one (`is_finished`)."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5
    FINISHED_ERROR = 6

    @property
    def is_finished(self) -> bool:
        return self > RequestStatus.PREEMPTED


FINISHED_STATUS: dict[FinishReason, RequestStatus] = {
    FinishReason.STOP: RequestStatus.FINISHED_STOPPED,
    FinishReason.LENGTH: RequestStatus.FINISHED_LENGTH,
    FinishReason.CANCELLED: RequestStatus.FINISHED_ABORTED,
    FinishReason.ERROR: RequestStatus.FINISHED_ERROR,
}


@dataclass(frozen=True, slots=True)
class Slo:
    """A request's service level objective; times in milliseconds after arrival. A real-time
    request has ttft_ms and tpot_ms, a deadline request deadline_ms (the Submit contract)."""

    service_class: ServiceClass = ServiceClass.BEST_EFFORT
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    deadline_ms: float | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """Places a request in a multi-call workflow (Tempo's collective requests)."""

    workflow_id: str
    application: str = ""
    stage: int = 0
    depends_on: tuple[str, ...] = ()
    workflow_deadline_ms: float | None = None
    # Arrival of the workflow's first call (same epoch as arrival_s); None: this call's arrival.
    workflow_start_s: float | None = None


@dataclass(slots=True, eq=False)
class Request:
    """One request: what the client asked for, its tokens, and the state every reader may see.

    Token accounting (vLLM-style): the known tokens are `prompt_token_ids + output_token_ids`;
    `num_output_placeholders` counts tokens sampled by steps still in flight (known only to the
    worker); `num_computed_tokens` counts tokens whose KV is (or will be, once the in-flight steps
    run) in the worker's cache. A request wants work while
    `num_computed_tokens < num_tokens_with_spec` and its scheduled outputs stay within max_tokens.

    The scheduler core writes `status`, the token counts and the output fields; policies and the
    service only read them. The core's private bookkeeping (orderings, aging, drain marks, steps
    in flight) is not here: it lives in the core's `Ticket` (core/ticket.py) and stays on the core
    when the request moves to another one.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams  # required: its max_tokens has no default below the gateway
    slo: Slo = field(default_factory=Slo)
    tenant: str = ""
    workflow: WorkflowRef | None = None
    arrival_s: float = 0.0
    # The prompt's full-block hash chain (llmserve.prefix, salted by tenant); () : no prefix cache.
    block_hashes: tuple[int, ...] = ()
    # The chain's root, the tenant's salt (llmserve.prefix.tenant_salt), which the worker names the
    # prompt's blocks by (NewRequest.prefix_salt); 0: the live worker caches nothing of it.
    prefix_salt: int = 0

    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    # Prompt tokens the worker's prefix cache holds, as last looked up (on arrival, again at
    # admission, where the hit is claimed). A queued request's num_computed_tokens starts here, so
    # whatever prices the prefill left (`num_tokens - num_computed_tokens`: admission control, the
    # cost model, bros's deadline arithmetic, tempo's density) charges only the uncached part.
    num_cached_tokens: int = 0
    num_output_placeholders: int = 0
    first_token_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    num_preemptions: int = 0
    finish_reason: FinishReason | None = None
    policy_state: object = None  # free slot for the policy's per-request cache

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_uncached_prompt_tokens(self) -> int:
        """The prompt's prefill work: the tokens its cached prefix does not cover."""
        return len(self.prompt_token_ids) - self.num_cached_tokens

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        """Known tokens: prompt plus confirmed output."""
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_tokens_with_spec(self) -> int:
        """Known tokens plus those sampled by steps in flight: what num_computed_tokens chases."""
        return len(self.prompt_token_ids) + len(self.output_token_ids) + self.num_output_placeholders

    @property
    def num_scheduled_outputs(self) -> int:
        """Output tokens confirmed or already being sampled."""
        return len(self.output_token_ids) + self.num_output_placeholders

    @property
    def service_class(self) -> ServiceClass:
        return self.slo.service_class

    @property
    def is_finished(self) -> bool:
        return self.status > RequestStatus.PREEMPTED

    def all_token_ids(self) -> tuple[int, ...]:
        return tuple(self.prompt_token_ids) + tuple(self.output_token_ids)

    def token_deadline_s(self, index: int) -> float:
        """When output token `index` (0-based) is due: RT `arrival + ttft + index·tpot`, DEADLINE
        `arrival + deadline` for every token, BEST_EFFORT +inf."""
        slo = self.slo
        if slo.service_class is ServiceClass.REAL_TIME:
            return self.arrival_s + (slo.ttft_ms + index * slo.tpot_ms) / 1000.0  # type: ignore[operator]
        if slo.service_class is ServiceClass.DEADLINE:
            return self.arrival_s + slo.deadline_ms / 1000.0  # type: ignore[operator]
        return math.inf

    def next_token_deadline_s(self) -> float:
        """Deadline of the next output token not yet scheduled for sampling."""
        return self.token_deadline_s(self.num_scheduled_outputs)

    def reset_for_queue(self) -> None:
        """Forget everything the worker held: the request restarts from its known tokens, past
        its cached prefix (as last looked up; admission looks again)."""
        self.num_computed_tokens = self.num_cached_tokens
        self.num_output_placeholders = 0
