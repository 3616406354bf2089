"""Domain messages of the worker core, mirroring `BatchPlan` / `StepResult` of worker.proto and
the lease messages of kvstore.proto (convert.py maps them to and from protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker_svc.core.checkpoint import RestoreSpec


class ServiceClass(IntEnum):
    """Same numbers as the proto enum; decides which end of the KV pool a request's blocks use."""

    UNSPECIFIED = 0
    REAL_TIME = 1
    DEADLINE = 2
    BEST_EFFORT = 3


class PlanError(ValueError):
    """A plan the worker cannot apply (unknown request, count mismatch, over a limit). The step
    fails with this message; the message says what the planner got wrong."""


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy; top_k 0 = off; top_p 1 = off. Output token i of the request is
    drawn with the counter-based generator seeded from (seed, i)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class NewRequest:
    request_id: str
    token_ids: tuple[int, ...]  # prompt, then outputs sampled before a preemption
    num_prompt_tokens: int
    sampling: SamplingParams
    service_class: ServiceClass
    num_output_tokens: int = 0  # draws already made: the next output token has this index
    trace_context: tuple[tuple[str, str], ...] = ()
    num_computed_tokens: int = 0  # > 0: restore this many tokens' KV from the host tier


@dataclass(frozen=True)
class ScheduledRequest:
    request_id: str
    num_tokens: int  # a prefill chunk, or 1 for a decode
    num_computed_tokens: int  # must equal the worker's own count
    sample: bool  # sample a token after this chunk


@dataclass(frozen=True)
class BatchPlan:
    step_id: int
    new_requests: tuple[NewRequest, ...] = ()
    scheduled: tuple[ScheduledRequest, ...] = ()
    finished_request_ids: tuple[str, ...] = ()
    preempted_request_ids: tuple[str, ...] = ()
    checkpoint_request_ids: tuple[str, ...] = ()  # of the preempted: save KV to the host tier first
    drop_checkpoint_request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeaseSpec:
    request_id: str
    service_class: ServiceClass
    num_blocks: int
    trace_context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class KvDelta:
    """What one step asks of the KV store: one atomic Apply(release, then leases)."""

    release_request_ids: tuple[str, ...] = ()
    leases: tuple[LeaseSpec, ...] = ()
    # Checkpoints to fetch after the Apply (their blocks are among the leases), for finish_step.
    restores: tuple[RestoreSpec, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.release_request_ids and not self.leases


@dataclass(frozen=True)
class Grant:
    request_id: str
    block_ids: tuple[int, ...]


@dataclass(frozen=True)
class SampledToken:
    request_id: str
    token_id: int


@dataclass(frozen=True)
class StepTiming:
    forward_ns: int = 0
    sample_ns: int = 0
    kv_ns: int = 0  # filled by the shell (the Apply RPC)
    total_ns: int = 0  # filled by the shell
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    num_kv_tokens_read: int = 0
    checkpoint_bytes: int = 0  # copied out of the cache for checkpoints
    restore_bytes: int = 0  # copied into the cache from checkpoints
    checkpoint_ns: int = 0
    restore_ns: int = 0  # the copy; the shell adds the fetch
    num_recomputed_tokens: int = 0  # restores that failed and were recomputed in the step


@dataclass(frozen=True)
class StepOutput:
    step_id: int
    sampled: tuple[SampledToken, ...] = ()
    timing: StepTiming = field(default_factory=StepTiming)
    restore_failed_request_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerDescription:
    """What Worker.Describe reports (after the cache is sized)."""

    worker_id: str
    model_name: str
    vocab_size: int
    max_model_len: int
    eos_token_ids: tuple[int, ...]
    block_size: int
    num_blocks: int
    bytes_per_block: int
    dtype: str
    device: str
    max_num_batched_tokens: int
    max_num_seqs: int
