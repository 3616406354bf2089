"""What a worker keeps per request, and what the plan book tells its caller about a step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from llmserve.plan import NewRequest, TraceContext
from llmserve.types import SamplingParams, ServiceClass, StepTiming, derive_seed


@dataclass(slots=True)
class RequestState:
    """What the worker keeps per request between steps.

    `token_ids[:num_computed]` have their KV in the cache, in blocks `block_table`; sampled tokens
    are appended to `token_ids`, so the next decode reads its input here, not from the plan.
    """

    request_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    sampling: SamplingParams  # its seed always set
    service_class: ServiceClass
    next_draw: int  # output index of the next sampled token (the generator's counter)
    trace_context: TraceContext = ()
    num_computed: int = 0
    block_table: list[int] = field(default_factory=list)

    @classmethod
    def admit(cls, new: NewRequest) -> RequestState:
        sampling = new.sampling
        if sampling.seed is None:
            sampling = dataclasses.replace(sampling, seed=derive_seed(new.request_id))
        # A prefix-cache hit starts with its cached tokens computed; a restore sets them once settled.
        return cls(new.request_id, list(new.token_ids), new.num_prompt_tokens, sampling, new.service_class,
                   new.num_output_tokens, new.trace_context, num_computed=new.num_cached_tokens)


@dataclass(slots=True)
class StepWork:
    """The open step's token accounting (the decode rule applied to every chunk)."""

    num_prefill_tokens: int
    num_decode_seqs: int
    num_kv_tokens_read: int
    num_recomputed_tokens: int = 0  # of failed restores (within num_prefill_tokens)
    restore_failed_request_ids: tuple[str, ...] = ()

    def timing(self, **measured: int) -> StepTiming:
        """The step's StepTiming: these counts plus the caller's measured times and bytes."""
        return StepTiming(num_prefill_tokens=self.num_prefill_tokens, num_decode_seqs=self.num_decode_seqs,
                          num_kv_tokens_read=self.num_kv_tokens_read,
                          num_recomputed_tokens=self.num_recomputed_tokens, **measured)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One scheduled request's work in the open step: tokens `start:end` of `state.token_ids`
    (start is the plan's count, except 0 after a failed restore)."""

    state: RequestState
    start: int
    end: int
    sample: bool
