"""The step runner: applies batch plans to the model and the paged KV cache.

A step is split in two so that the async shell can lease KV blocks in between:

    delta = runner.begin_step(plan)      # drop, admit, validate; which blocks to release/lease
    grants = <one KvStore.Apply(delta)>  # the shell's business
    output = runner.finish_step(grants)  # extend block tables, forward, sample

If the Apply or the forward pass fails, the shell calls `abort_step(...)`: the step's requests
are dropped (the planner re-queues them for recompute) and their leases released with the next
Apply. Synchronous and single-threaded: one step at a time, in plan order.

Checkpoints (core/checkpoint.py): a request preempted by checkpoint is copied to host bytes in
`begin_step`, before its blocks are released; resumed requests list `delta.restores`, which the
shell fetches between the Apply and `finish_step(grants, restored)`; a restore that cannot be done
is recomputed in the step (the chunk then starts at 0). The writes and drops for the store pile up
in the runner; the shell takes them with `take_checkpoint_ops()` and sends them in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from worker_svc.core.checkpoint import CheckpointTracker, CheckpointWrite, RestoredKv, RestoreSpec
from worker_svc.core.request_state import RequestState
from worker_svc.core.sampler import sample
from worker_svc.core.types import (
    BatchPlan,
    Grant,
    KvDelta,
    LeaseSpec,
    PlanError,
    SampledToken,
    SamplingParams,
    ScheduledRequest,
    StepOutput,
    StepTiming,
)
from worker_svc.model.kv_cache import KvCache
from worker_svc.model.llama import LlamaModel
from worker_svc.model.metadata import build_metadata


@dataclass(frozen=True)
class RunnerLimits:
    max_num_batched_tokens: int
    max_num_seqs: int


@dataclass(frozen=True)
class _PendingStep:
    plan: BatchPlan
    leases: tuple[LeaseSpec, ...]
    released: tuple[str, ...]
    restores: tuple[RestoreSpec, ...] = ()
    checkpoint_bytes: int = 0
    checkpoint_ns: int = 0


class StepRunner:
    def __init__(
        self,
        model: LlamaModel,
        kv_cache: KvCache,
        limits: RunnerLimits,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        lazy_checkpoint_blocks: int = 0,
    ) -> None:
        """`lazy_checkpoint_blocks`: send full blocks of running non-real-time requests to the host
        tier this many at a time (0: only at preemption)."""
        self.model = model
        self.kv_cache = kv_cache
        self.limits = limits
        self.block_size = kv_cache.spec.block_size
        self.device = model.embed_tokens.weight.device
        self._clock_ns = clock_ns
        self._states: dict[str, RequestState] = {}
        self._pending: _PendingStep | None = None
        self._unreleased: list[str] = []  # ids whose leases still need a release (failed steps)
        self.checkpoints = CheckpointTracker(kv_cache, lazy_checkpoint_blocks)
        self._checkpoint_ops: list[CheckpointWrite | str] = []  # for the store, in order (str: a drop)

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(self._states)

    def state(self, request_id: str) -> RequestState:
        return self._states[request_id]

    # ---- phase 1 ----------------------------------------------------------------------------

    def begin_step(self, plan: BatchPlan) -> KvDelta:
        """Validates the plan against the worker's state (raising PlanError without changing
        anything), drops finished and preempted requests, admits new ones, and returns the KV
        blocks to release and to lease for this step."""
        if self._pending is not None:
            raise PlanError(f"step {self._pending.plan.step_id} is still open; finish or abort it first")
        dropped = set(plan.finished_request_ids) | set(plan.preempted_request_ids)
        self._validate(plan, dropped)

        ckpt_start = self._clock_ns()
        ckpt_bytes = self._checkpoint_dropped(plan)
        ckpt_ns = self._clock_ns() - ckpt_start if ckpt_bytes else 0
        released = list(dict.fromkeys([*self._unreleased, *plan.finished_request_ids, *plan.preempted_request_ids]))
        for request_id in dropped:
            self._states.pop(request_id, None)  # an unknown id is fine: its lease may still exist
        for new in plan.new_requests:
            self._states[new.request_id] = RequestState.admit(new)
        self._unreleased = []

        leases = []
        for item in plan.scheduled:
            state = self._states[item.request_id]
            blocks_needed = -(-(item.num_computed_tokens + item.num_tokens) // self.block_size)
            extra = blocks_needed - len(state.block_table)
            if extra > 0:
                leases.append(LeaseSpec(item.request_id, state.service_class, extra, state.trace_context))
        restores = tuple(RestoreSpec(n.request_id, n.num_computed_tokens) for n in plan.new_requests
                         if n.num_computed_tokens > 0)
        self._pending = _PendingStep(plan, tuple(leases), tuple(released), restores, ckpt_bytes, ckpt_ns)
        return KvDelta(tuple(released), tuple(leases), restores)

    def _checkpoint_dropped(self, plan: BatchPlan) -> int:
        """Queues the store ops of the requests this plan drops; returns the bytes copied."""
        tracker = self.checkpoints
        to_save = set(plan.checkpoint_request_ids)
        nbytes = 0
        for request_id in plan.preempted_request_ids:
            state = self._states.get(request_id)
            if state is None:
                continue
            write = tracker.preempt(state) if request_id in to_save else tracker.drop_state(request_id)
            if write is not None:
                self._checkpoint_ops.append(write)
                nbytes += write.nbytes
        explicit = set(plan.drop_checkpoint_request_ids)
        for request_id in dict.fromkeys([*plan.finished_request_ids, *plan.drop_checkpoint_request_ids]):
            if tracker.finish(request_id) or request_id in explicit:
                self._checkpoint_ops.append(request_id)
        return nbytes

    def take_checkpoint_ops(self) -> list[CheckpointWrite | str]:
        """Writes (`CheckpointWrite`) and drops (a request id) for the store since the last call,
        in the order they must reach it."""
        ops, self._checkpoint_ops = self._checkpoint_ops, []
        return ops

    def _validate(self, plan: BatchPlan, dropped: set[str]) -> None:
        vocab = self.model.config.vocab_size
        new_by_id = {}
        for new in plan.new_requests:
            rid = new.request_id
            if not rid:
                raise PlanError("a new request has an empty request_id")
            if rid in new_by_id:
                raise PlanError(f"request {rid} is listed twice in new_requests")
            if rid in self._states and rid not in dropped:
                raise PlanError(f"new request {rid} is already running on this worker: finish or preempt it first")
            if not new.token_ids:
                raise PlanError(f"new request {rid} has no token_ids")
            if not 0 < new.num_prompt_tokens <= len(new.token_ids):
                raise PlanError(f"new request {rid}: num_prompt_tokens {new.num_prompt_tokens} not in [1, {len(new.token_ids)}]")
            if max(new.token_ids) >= vocab:
                raise PlanError(f"new request {rid} has token id {max(new.token_ids)} >= vocab size {vocab}")
            if not 0 <= new.num_computed_tokens < len(new.token_ids):
                raise PlanError(f"new request {rid}: num_computed_tokens {new.num_computed_tokens} to restore must be "
                                f"below its {len(new.token_ids)} known tokens")
            new_by_id[rid] = new
        preempted = set(plan.preempted_request_ids)
        for rid in plan.checkpoint_request_ids:
            if rid not in preempted:
                raise PlanError(f"request {rid} is in checkpoint_request_ids but not in preempted_request_ids")
        if len(plan.scheduled) > self.limits.max_num_seqs:
            raise PlanError(f"{len(plan.scheduled)} scheduled requests exceed max_num_seqs {self.limits.max_num_seqs}")
        total = sum(item.num_tokens for item in plan.scheduled)
        if total > self.limits.max_num_batched_tokens:
            raise PlanError(f"{total} scheduled tokens exceed max_num_batched_tokens {self.limits.max_num_batched_tokens}")
        seen: set[str] = set()
        for item in plan.scheduled:
            self._validate_scheduled(item, new_by_id, dropped, seen)

    def _validate_scheduled(self, item: ScheduledRequest, new_by_id: dict, dropped: set[str], seen: set[str]) -> None:
        rid = item.request_id
        if rid in seen:
            raise PlanError(f"request {rid} is scheduled twice in one step")
        seen.add(rid)
        if rid in new_by_id:
            num_tokens_known, computed = len(new_by_id[rid].token_ids), new_by_id[rid].num_computed_tokens
        elif rid in self._states and rid not in dropped:
            state = self._states[rid]
            num_tokens_known, computed = len(state.token_ids), state.num_computed
        else:
            raise PlanError(f"scheduled request {rid} is unknown to this worker (send it as a new request)")
        if item.num_computed_tokens != computed:
            raise PlanError(f"request {rid}: plan says num_computed_tokens={item.num_computed_tokens}, worker has {computed}")
        if item.num_tokens < 1:
            raise PlanError(f"request {rid}: num_tokens must be >= 1")
        end = computed + item.num_tokens
        if end > num_tokens_known:
            raise PlanError(f"request {rid}: computing up to token {end} but only {num_tokens_known} tokens are known")
        if item.sample and end != num_tokens_known:
            raise PlanError(f"request {rid}: sample=true but the chunk ends at {end}, not at the last known token {num_tokens_known}")
        if end > self.model.config.max_model_len:
            raise PlanError(f"request {rid}: {end} tokens exceed the model's max length {self.model.config.max_model_len}")

    # ---- phase 2 ----------------------------------------------------------------------------

    def finish_step(self, grants: Sequence[Grant], restored: Mapping[str, RestoredKv | None] | None = None) -> StepOutput:
        """Extends block tables with the granted blocks, restores resumed requests' KV from
        `restored` (fetched for `delta.restores`; a missing or unusable one is recomputed in this
        step), runs one forward pass over every scheduled token, samples for the requests that
        asked, and appends their tokens."""
        pending = self._pending
        if pending is None:
            raise PlanError("finish_step without begin_step")
        self._check_grants(pending.leases, grants)
        for grant in grants:
            self._states[grant.request_id].block_table.extend(grant.block_ids)
        restore_start = self._clock_ns()
        restore_failed: list[str] = []
        recomputed = restore_bytes = 0
        for spec in pending.restores:
            data = (restored or {}).get(spec.request_id)
            if self.checkpoints.apply_restore(self._states[spec.request_id], spec, data):
                restore_bytes += -(-spec.num_tokens // self.block_size) * self.kv_cache.spec.bytes_per_block
            else:
                restore_failed.append(spec.request_id)
                recomputed += spec.num_tokens
        restore_ns = self._clock_ns() - restore_start if pending.restores else 0
        scheduled = pending.plan.scheduled
        if not scheduled:
            self._pending = None
            timing = StepTiming(checkpoint_bytes=pending.checkpoint_bytes, checkpoint_ns=pending.checkpoint_ns)
            return StepOutput(pending.plan.step_id, timing=timing, restore_failed_request_ids=tuple(restore_failed))

        # Decodes first (the backends batch them), then prefill chunks; plan order otherwise.
        order = sorted(range(len(scheduled)), key=lambda i: scheduled[i].num_tokens != 1)
        items = [scheduled[i] for i in order]
        states = [self._states[item.request_id] for item in items]
        # A chunk starts at the worker's own count: the plan's, except after a failed restore.
        starts = [state.num_computed for state in states]
        ends = [item.num_computed_tokens + item.num_tokens for item in items]
        input_ids: list[int] = []
        for state, start, end in zip(states, starts, ends):
            input_ids.extend(state.token_ids[start:end])
        meta, positions = build_metadata(
            [end - start for start, end in zip(starts, ends)],
            starts,
            [state.block_table for state in states],
            self.block_size,
            self.device,
        )
        sampling_rows = [b for b, item in enumerate(items) if item.sample]
        logits_indices = torch.tensor([meta.query_start_host[b + 1] - 1 for b in sampling_rows], dtype=torch.long)

        start = self._clock_ns()
        logits = self.model(
            torch.tensor(input_ids, dtype=torch.long, device=self.device),
            positions,
            meta,
            self.kv_cache,
            logits_indices.to(self.device),
        )  # [S, V]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        forward_ns = self._clock_ns() - start

        start = self._clock_ns()
        tokens = sample(logits, [states[b].sampling for b in sampling_rows], [states[b].next_draw for b in sampling_rows])
        sample_ns = self._clock_ns() - start

        for state, end in zip(states, ends):
            state.num_computed = end
        token_of = {}
        for b, token in zip(sampling_rows, tokens):
            states[b].token_ids.append(token)
            states[b].next_draw += 1
            token_of[items[b].request_id] = token
        self._pending = None

        lazy_start = self._clock_ns()
        lazy = self.checkpoints.lazy(states)
        self._checkpoint_ops.extend(lazy)
        lazy_bytes = sum(w.nbytes for w in lazy)
        lazy_ns = self._clock_ns() - lazy_start if lazy else 0

        decodes = [item for item, state, start, end in zip(items, states, starts, ends)
                   if end - start == 1 and start >= state.num_prompt_tokens]
        timing = StepTiming(
            forward_ns=forward_ns,
            sample_ns=sample_ns,
            num_prefill_tokens=sum(end - start for start, end in zip(starts, ends)) - len(decodes),
            num_decode_seqs=len(decodes),
            num_kv_tokens_read=sum(meta.context_lens_host),
            checkpoint_bytes=pending.checkpoint_bytes + lazy_bytes,
            restore_bytes=restore_bytes,
            checkpoint_ns=pending.checkpoint_ns + lazy_ns,
            restore_ns=restore_ns,
            num_recomputed_tokens=recomputed,
        )
        sampled = tuple(SampledToken(item.request_id, token_of[item.request_id]) for item in scheduled if item.sample)
        return StepOutput(pending.plan.step_id, sampled, timing, tuple(restore_failed))

    def _check_grants(self, leases: Sequence[LeaseSpec], grants: Sequence[Grant]) -> None:
        if len(grants) != len(leases):
            raise PlanError(f"the KV store answered {len(grants)} grants for {len(leases)} leases")
        for lease, grant in zip(leases, grants):
            if grant.request_id != lease.request_id or len(grant.block_ids) != lease.num_blocks:
                raise PlanError(
                    f"grant for {grant.request_id} ({len(grant.block_ids)} blocks) does not answer the lease of "
                    f"{lease.num_blocks} blocks for {lease.request_id}"
                )
            bad = [b for b in grant.block_ids if not 0 <= b < self.kv_cache.num_blocks]
            if bad:
                raise PlanError(f"granted block ids {bad} are outside this worker's {self.kv_cache.num_blocks} blocks")

    def warm_up(self) -> None:
        """Runs a prefill and a decode batch outside any request (first-call allocations, kernel
        compilation), writing only into block 0.. of the cache: call it before leasing blocks."""
        blocks_needed = -(-min(64, self.limits.max_num_batched_tokens) // self.block_size)
        prefill = min(64, self.limits.max_num_batched_tokens, blocks_needed * self.block_size,
                      self.kv_cache.num_blocks * self.block_size)
        decodes = min(8, self.limits.max_num_seqs)
        table = list(range(min(blocks_needed, self.kv_cache.num_blocks)))
        for query_lens, computed in (([prefill], [0]), ([1] * decodes, [0] * decodes)):
            meta, positions = build_metadata(query_lens, computed, [table] * len(query_lens), self.block_size, self.device)
            ids = torch.zeros(sum(query_lens), dtype=torch.long, device=self.device)
            rows = torch.tensor([meta.query_start_host[b + 1] - 1 for b in range(len(query_lens))], device=self.device)
            logits = self.model(ids, positions, meta, self.kv_cache, rows)
            sample(logits, [SamplingParams(temperature=0.0)] * len(query_lens), [0] * len(query_lens))

    # ---- failure and shutdown ---------------------------------------------------------------

    def abort_step(self, kv_applied: bool) -> tuple[str, ...]:
        """The open step failed. Drops the state of every request it scheduled or admitted (the
        planner recomputes them) and remembers their leases for the next release. When the KV
        Apply did not happen (`kv_applied` false), the step's own releases are kept for the next
        one too. Returns the dropped ids."""
        pending, self._pending = self._pending, None
        if pending is None:
            return ()
        plan = pending.plan
        dropped = list(dict.fromkeys([item.request_id for item in plan.scheduled] + [n.request_id for n in plan.new_requests]))
        for request_id in dropped:
            self._drop_checkpointed_state(request_id)
            self._states.pop(request_id, None)
        carry = [] if kv_applied else list(pending.released)
        self._unreleased = list(dict.fromkeys([*self._unreleased, *carry, *dropped]))
        return tuple(dropped)

    def reset(self) -> tuple[str, ...]:
        """Drops every request (the Execute stream closed). Returns the ids whose leases to release."""
        ids = list(dict.fromkeys([*self._unreleased, *self._states]))
        if self._pending is not None:
            ids = list(dict.fromkeys([*ids, *self._pending.released]))
        for request_id in self._states:
            self._drop_checkpointed_state(request_id)
        self._states.clear()
        self._pending = None
        self._unreleased = []
        return tuple(ids)

    def _drop_checkpointed_state(self, request_id: str) -> None:
        write = self.checkpoints.drop_state(request_id)
        if write is not None:
            self._checkpoint_ops.append(write)
