"""One plan type per direction, the same objects in the scheduler core, the worker core, the
simulator and the in-process engine (convert.py of each service maps them to worker.proto):

    scheduler --BatchPlan--> worker --LeaseSpec--> KV store     (direct leases: Apply)
    scheduler <--StepResult-- worker <--Grant----- KV store
                             worker --LeaseSync--> KV store     (leases held ahead: Sync, in batches)
                             worker <--SyncReply-- KV store
                             worker --PoolDeclaration--> KV store (after the store lost the pool)

Frozen messages, pure (stdlib only). How a worker applies a plan is `llmserve.plan_book`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from llmserve.types import SamplingParams, ServiceClass, StepTiming

TraceContext = tuple[tuple[str, str], ...]  # a W3C carrier (`traceparent`, `tracestate`), sorted


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request the worker has not seen (new, or re-admitted after a preemption)."""

    request_id: str
    # Every known token: the prompt, then the outputs generated before a preemption.
    token_ids: tuple[int, ...]
    num_prompt_tokens: int
    sampling: SamplingParams
    service_class: ServiceClass
    # Outputs already sampled: the request's generator skips this many draws.
    num_output_tokens: int = 0
    # > 0: resume from the host-tier checkpoint, whose KV covers this many tokens (not recomputed),
    # or, when num_cached_tokens says so, start past a prefix-cache hit.
    num_computed_tokens: int = 0
    # The request's trace context, so the worker's spans join its trace (set by the shell).
    trace_context: TraceContext = ()
    # > 0: those leading prompt tokens are a prefix-cache hit, their KV already in the worker's
    # cache (shared blocks), so they are neither restored nor computed. Equal to
    # num_computed_tokens for a fresh admission (a worker that no longer holds all of them
    # recomputes the rest within the step); below it for a resume past its cached prefix: the
    # checkpoint supplies only the blocks after those the cache still holds (issue 13: a restore
    # re-acquires the shared prefix instead of writing private copies of it).
    num_cached_tokens: int = 0
    # The root of the prompt's block-hash chain (llmserve.prefix.tenant_salt): the worker names
    # the full prompt blocks it computes on this chain and keeps them cached. 0: not cached.
    prefix_salt: int = 0


class ScheduledRequest(NamedTuple):
    """Work for one request in one step."""

    request_id: str
    num_tokens: int  # a prefill chunk, or 1 for a decode
    num_computed_tokens: int  # KV tokens before this step (the worker checks its own count)
    sample: bool  # sample a token at the end of this chunk


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """One step. The worker applies, in this order: drop finished and preempted requests (release
    their KV; checkpoint those listed first), create new requests, then compute `scheduled`."""

    step_id: int
    new_requests: tuple[NewRequest, ...] = ()
    scheduled: tuple[ScheduledRequest, ...] = ()
    finished_request_ids: tuple[str, ...] = ()
    preempted_request_ids: tuple[str, ...] = ()
    # Of the preempted, those whose KV the worker saves to the host tier first.
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


# A token sampled for one request: (request_id, token_id). A plain pair, not a class: one is made
# per request per step (the simulator's hot path), and `dict(result.sampled)` maps id -> token.
SampledToken = tuple[str, int]


class StepErrorCode(enum.IntEnum):
    """Why a step failed (worker.proto StepErrorCode), so the scheduler can tell its own bad plan
    from a refused lease from a crash. Every failed step samples nothing and is recomputed."""

    NONE = 0  # the step succeeded (the proto's UNSPECIFIED)
    INVALID_PLAN = 1  # the plan broke the contract (a planner bug): nothing of its work was done
    KV_REFUSED = 2  # the KV store refused the leases (RESOURCE_EXHAUSTED, a class conflict)
    KV_UNAVAILABLE = 3  # the KV store could not be reached (UNAVAILABLE, DEADLINE_EXCEEDED)
    STEP_FAILED = 4  # the forward pass, sampling or a restore crashed


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one plan: one (request_id, token_id) per scheduled request with sample=True,
    in plan order, or an error (then nothing was sampled)."""

    step_id: int
    sampled: tuple[SampledToken, ...] = ()
    timing: StepTiming | None = None
    error: str = ""
    # Resumed requests whose prefix the worker recomputed because the restore failed.
    restore_failed_request_ids: tuple[str, ...] = ()
    # Requests whose checkpoint the store refused or lost (re-admit them by recompute).
    checkpoint_failed_request_ids: tuple[str, ...] = ()
    error_code: StepErrorCode = StepErrorCode.NONE
    # The worker's prefix cache since its previous result (llmserve/plan_book/prefix_cache.py):
    # hashes of the blocks now cached on the device, now in neither tier, and now in its host
    # tier (disjoint), so the scheduler mirrors it exactly.
    cached_block_hashes: tuple[int, ...] = ()
    evicted_block_hashes: tuple[int, ...] = ()
    demoted_block_hashes: tuple[int, ...] = ()
    # INVALID_PLAN: the request the worker's checks found at fault ("" when none was named).
    rejected_request_id: str = ""


@dataclass(frozen=True, slots=True)
class LeaseSpec:
    """Add `num_blocks` KV blocks to the lease of `request_id` (kvstore.proto LeaseSpec)."""

    request_id: str
    service_class: ServiceClass
    num_blocks: int
    trace_context: TraceContext = ()


@dataclass(frozen=True, slots=True)
class Grant:
    """Blocks newly granted to one request, in the order it should use them."""

    request_id: str
    block_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RestoreSpec:
    """A resumed request whose first `num_tokens` tokens' KV come from its checkpoint, but for its
    first `first_block` blocks, which its prefix-cache hit already put in place (neither fetched
    nor copied)."""

    request_id: str
    num_tokens: int
    first_block: int = 0


@dataclass(frozen=True, slots=True)
class KvDelta:
    """What one step asks of the KV store: one atomic Apply (releases first, then the leases),
    and the checkpoints to fetch after it (their blocks are among the leases)."""

    release_request_ids: tuple[str, ...] = ()
    leases: tuple[LeaseSpec, ...] = ()
    restores: tuple[RestoreSpec, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.release_request_ids and not self.leases


@dataclass(frozen=True, slots=True)
class Holding:
    """Blocks one request holds in a worker's pool, in the order it uses them (kvstore.proto
    Holding): a re-declared lease, or reserve blocks assigned to it in a sync."""

    request_id: str
    service_class: ServiceClass
    block_ids: tuple[int, ...]
    trace_context: TraceContext = ()


@dataclass(frozen=True, slots=True)
class LeaseSync:
    """A worker's lease changes since its previous sync (kvstore.proto SyncRequest), applied by the
    store in this order, atomically: releases (to the worker's reserve), assignments (reserve
    blocks to requests), unreserved blocks (to the pool), new reserve blocks from each end."""

    sequence: int
    release_request_ids: tuple[str, ...] = ()
    assignments: tuple[Holding, ...] = ()
    unreserve_block_ids: tuple[int, ...] = ()
    reserve_low: int = 0
    reserve_high: int = 0


@dataclass(frozen=True, slots=True)
class SyncReply:
    """What the store answered a sync: the blocks it added to the reserve from each end."""

    sequence: int
    reserved_low: tuple[int, ...] = ()
    reserved_high: tuple[int, ...] = ()
    num_released: int = 0


@dataclass(frozen=True, slots=True)
class PoolDeclaration:
    """Everything a worker holds in its pool, for a store that lost it: its requests' blocks and
    its reserve (by the end each part was taken from)."""

    held: tuple[Holding, ...] = ()
    reserved_low: tuple[int, ...] = ()
    reserved_high: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.held or self.reserved_low or self.reserved_high)
