"""What the worker checks in a plan and in the store's grants, and the PlanError that says what
the planner (or the store) got wrong. Contracts only: client input was the gateway's to check."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmserve.plan import BatchPlan, Grant, LeaseSpec, NewRequest


class PlanError(ValueError):
    """A plan (or a grant) the worker cannot apply: unknown request, count mismatch, over a limit.
    The step fails with this message, which says what the planner got wrong; `request_id` names
    the request at fault when there is one."""

    def __init__(self, message: str, request_id: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """What the worker accepts. None: not checked (a simulated model has no vocabulary)."""

    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    vocab_size: int | None = None
    num_blocks: int | None = None  # granted block ids must be below this


def check_grants(leases: Sequence[LeaseSpec], grants: Sequence[Grant], num_blocks: int | None) -> None:
    """The store answered one grant per lease, in order, of the blocks asked, inside the pool."""
    if len(grants) != len(leases):
        raise PlanError(f"the KV store answered {len(grants)} grants for {len(leases)} leases")
    for lease, grant in zip(leases, grants):
        if grant.request_id != lease.request_id or len(grant.block_ids) != lease.num_blocks:
            raise PlanError(
                f"grant for {grant.request_id} ({len(grant.block_ids)} blocks) does not answer the lease of "
                f"{lease.num_blocks} blocks for {lease.request_id}", lease.request_id)
        if num_blocks is not None:
            bad = [b for b in grant.block_ids if not 0 <= b < num_blocks]
            if bad:
                raise PlanError(f"granted block ids {bad} are outside this worker's {num_blocks} blocks",
                                lease.request_id)


def check_new_requests(plan: BatchPlan, states: Mapping[str, object], limits: PlanLimits) -> dict[str, NewRequest]:
    """Checks the new requests (against the worker's `states`, after the plan's drops), the
    checkpoint ids and the step's size; returns the new requests by id. The chunks are checked
    in the book's hot loop (`reject_chunk` names what is wrong with one)."""
    new_by_id: dict[str, NewRequest] = {}
    for new in plan.new_requests:
        _check_new(new, new_by_id, states, limits)
        new_by_id[new.request_id] = new
    if plan.checkpoint_request_ids:
        preempted = set(plan.preempted_request_ids)
        for rid in plan.checkpoint_request_ids:
            if rid not in preempted:
                raise PlanError(f"request {rid} is in checkpoint_request_ids but not in preempted_request_ids", rid)
    scheduled = plan.scheduled
    if len(scheduled) > limits.max_num_seqs:
        raise PlanError(f"{len(scheduled)} scheduled requests exceed max_num_seqs {limits.max_num_seqs}")
    if len(set(map(_request_id_of, scheduled))) != len(scheduled):
        seen: set[str] = set()
        for item in scheduled:
            if item.request_id in seen:
                raise PlanError(f"request {item.request_id} is scheduled twice in one step", item.request_id)
            seen.add(item.request_id)
    return new_by_id


def _check_new(new: NewRequest, new_by_id: Mapping[str, NewRequest], states: Mapping[str, object],
               limits: PlanLimits) -> None:
    rid = new.request_id
    if not rid:
        raise PlanError("a new request has an empty request_id")
    if rid in new_by_id:
        raise PlanError(f"request {rid} is listed twice in new_requests", rid)
    if rid in states:
        raise PlanError(f"new request {rid} is already running on this worker: finish or preempt it first", rid)
    tokens = new.token_ids
    if not tokens:
        raise PlanError(f"new request {rid} has no token_ids", rid)
    if not 0 < new.num_prompt_tokens <= len(tokens):
        raise PlanError(f"new request {rid}: num_prompt_tokens {new.num_prompt_tokens} not in [1, {len(tokens)}]", rid)
    vocab = limits.vocab_size
    if vocab is not None and max(tokens) >= vocab:
        raise PlanError(f"new request {rid} has token id {max(tokens)} >= vocab size {vocab}", rid)
    if not 0 <= new.num_computed_tokens < len(tokens):
        raise PlanError(f"new request {rid}: num_computed_tokens {new.num_computed_tokens} to restore must be "
                        f"below its {len(tokens)} known tokens", rid)
    if new.num_cached_tokens and not new.num_cached_tokens <= new.num_computed_tokens or (
            new.num_cached_tokens >= new.num_prompt_tokens):
        raise PlanError(f"new request {rid}: num_cached_tokens {new.num_cached_tokens} must be at most "
                        f"num_computed_tokens {new.num_computed_tokens} (equal, or less to restore the rest) and "
                        f"leave a prompt token to compute", rid)


_request_id_of = operator.itemgetter(0)  # of a ScheduledRequest


def reject_chunk(rid: str, num_tokens: int, computed: int, sample: bool, worker_computed: int, num_known: int,
                 max_model_len: int) -> None:
    """Raises the PlanError of a chunk that failed one of the book's checks (in this order)."""
    if computed != worker_computed:
        raise PlanError(f"request {rid}: plan says num_computed_tokens={computed}, worker has {worker_computed}", rid)
    if num_tokens < 1:
        raise PlanError(f"request {rid}: num_tokens must be >= 1", rid)
    end = computed + num_tokens
    if end > num_known:
        raise PlanError(f"request {rid}: computing up to token {end} but only {num_known} tokens are known", rid)
    if sample and end != num_known:
        raise PlanError(f"request {rid}: sample=true but the chunk ends at {end}, not at the last known token "
                        f"{num_known}", rid)
    raise PlanError(f"request {rid}: {end} tokens exceed the model's max length {max_model_len}", rid)
