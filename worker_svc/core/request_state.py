"""What the worker keeps per request between steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker_svc.core.types import NewRequest, SamplingParams, ServiceClass


@dataclass(slots=True)
class RequestState:
    """A request's tokens (its input for the next steps), KV progress and blocks.

    `token_ids[:num_computed]` have their KV in the cache, in blocks `block_table`; sampled tokens
    are appended to `token_ids`, so the next decode reads its input here, not from the plan.
    """

    request_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    sampling: SamplingParams
    service_class: ServiceClass
    next_draw: int  # output index of the next sampled token (the generator's counter)
    trace_context: tuple[tuple[str, str], ...] = ()
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)

    @classmethod
    def admit(cls, new: NewRequest) -> RequestState:
        return cls(
            request_id=new.request_id,
            token_ids=list(new.token_ids),
            num_prompt_tokens=new.num_prompt_tokens,
            sampling=new.sampling,
            service_class=new.service_class,
            next_draw=new.num_output_tokens,
            trace_context=new.trace_context,
        )
