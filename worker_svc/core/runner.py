"""The step runner: the torch half of applying a plan. What a plan means (validation, admission,
block needs, token accounting) is the plan book's (llmserve/plan_book.py, shared with the
simulator and the tests' fake worker); the runner adds the forward pass, sampling and the
checkpoint copies. A step is split in two so that the async shell can lease KV blocks between:

    delta = runner.begin_step(plan)      # book: drop, validate, admit; checkpoint the preempted
    grants = <the delta's leases>        # the shell's business (from the blocks it holds ahead)
    result = runner.finish_step(grants)  # extend block tables, restore, forward, sample

If the leases or the forward pass fail, the shell calls `abort_step(...)`: the step's requests
are dropped (the planner re-queues them for recompute) and their leases released with the next
step. Synchronous and single-threaded: one step at a time, in plan order.

Checkpoints (core/checkpoint.py): a request preempted by checkpoint is copied to host bytes in
`begin_step`, before its blocks can be reused; resumed requests list `delta.restores`, which the
shell fetches between the leases and `finish_step(grants, restored)`; a restore that cannot be done
is recomputed in the step. The writes and drops for the store pile up in the runner; the shell
takes them with `take_checkpoint_ops()` and sends them in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from llmserve.plan import BatchPlan, Grant, KvDelta, RestoreSpec, StepResult
from llmserve.plan_book import Chunk, PlanBook, PlanError, PlanLimits, RequestState, WorkerPrefixCache
from llmserve.types import SamplingParams, cdiv
from worker_svc.core.checkpoint import CheckpointTracker, CheckpointWrite, RestoredKv
from worker_svc.core.sampler import sample
from worker_svc.core.types import FinishPhases
from worker_svc.model.kv_cache import KvCache
from worker_svc.model.llama import LlamaModel
from worker_svc.model.metadata import build_metadata

_WARM_UP_SAMPLING = SamplingParams(max_tokens=1, temperature=0.0)


@dataclass(frozen=True)
class RunnerLimits:
    max_num_batched_tokens: int
    max_num_seqs: int


class StepRunner:
    def __init__(
        self,
        model: LlamaModel,
        kv_cache: KvCache,
        limits: RunnerLimits,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        lazy_checkpoint_blocks: int = 0,
        prefix: WorkerPrefixCache | None = None,
    ) -> None:
        """`lazy_checkpoint_blocks`: send full blocks of running non-real-time requests to the host
        tier this many at a time (0: only at preemption). `prefix`: the prefix cache (default: one
        without a host tier; worker_svc/core/prefix_tier.py builds one with)."""
        self.model = model
        self.kv_cache = kv_cache
        self.limits = limits
        self.block_size = kv_cache.spec.block_size
        self.device = model.embed_tokens.weight.device
        self._clock_ns = clock_ns
        model.bucket_rows(limits.max_num_batched_tokens)  # a bounded set of oneDNN primitives (issue 11)
        # The prefix cache names the prompt blocks of requests the plan gives a salt (issue 13).
        self.book = PlanBook(self.block_size, PlanLimits(
            limits.max_num_batched_tokens, limits.max_num_seqs, model.config.max_model_len,
            vocab_size=model.config.vocab_size, num_blocks=kv_cache.num_blocks),
            prefix=prefix if prefix is not None else WorkerPrefixCache(self.block_size))
        self.checkpoints = CheckpointTracker(kv_cache, lazy_checkpoint_blocks)
        self._checkpoint_ops: list[CheckpointWrite | str] = []  # for the store, in order (str: a drop)
        self._begin_checkpoint = (0, 0)  # bytes and ns of the open step's preemption checkpoints
        self.last_phases = FinishPhases()  # where the last finish_step's time went outside the forward

    @property
    def request_ids(self) -> tuple[str, ...]:
        return self.book.request_ids

    def state(self, request_id: str) -> RequestState:
        return self.book.state(request_id)

    # ---- phase 1 ----------------------------------------------------------------------------

    def begin_step(self, plan: BatchPlan) -> KvDelta:
        """Drops the plan's finished and preempted requests (checkpointing those asked), then
        validates the rest against the worker's state (PlanError: nothing admitted, nothing to
        lease) and returns the KV blocks to release and to lease for this step."""
        start = self._clock_ns()
        dropped = self.book.drop(plan)
        nbytes = self._checkpoint_dropped(plan, dropped)
        self._begin_checkpoint = (nbytes, self._clock_ns() - start if nbytes else 0)
        return self.book.admit(plan)

    def _checkpoint_dropped(self, plan: BatchPlan, preempted: Sequence[RequestState]) -> int:
        """Queues the store ops of the requests this plan drops; returns the bytes copied."""
        tracker = self.checkpoints
        to_save = set(plan.checkpoint_request_ids)
        nbytes = 0
        for state in preempted:
            write = tracker.preempt(state) if state.request_id in to_save else tracker.drop_state(state.request_id)
            if write is not None:
                self._checkpoint_ops.append(write)
                nbytes += write.nbytes
        explicit = set(plan.drop_checkpoint_request_ids)
        for request_id in dict.fromkeys([*plan.finished_request_ids, *plan.drop_checkpoint_request_ids]):
            if tracker.finish(request_id) or request_id in explicit:
                self._checkpoint_ops.append(request_id)
        return nbytes

    def forget_store(self) -> None:
        """The KV store restarted (its host tier is empty): forget which blocks it held, and drop
        whatever reached the new store since, so that later checkpoints are written whole."""
        self._checkpoint_ops.extend(self.checkpoints.forget_store())

    @property
    def begin_checkpoint_ns(self) -> int:
        """Time the open step's `begin_step` spent copying preempted requests' KV out."""
        return self._begin_checkpoint[1]

    def take_checkpoint_ops(self) -> list[CheckpointWrite | str]:
        """Writes (`CheckpointWrite`) and drops (a request id) for the store since the last call,
        in the order they must reach it."""
        ops, self._checkpoint_ops = self._checkpoint_ops, []
        return ops

    # ---- phase 2 ----------------------------------------------------------------------------

    def finish_step(self, grants: Sequence[Grant],
                    restored: Mapping[str, RestoredKv | None] | None = None) -> StepResult:
        """Extends block tables with the granted blocks, restores resumed requests' KV from
        `restored` (fetched for `delta.restores`; a missing or unusable one is recomputed in this
        step), runs one forward pass over every scheduled token, samples for the requests that
        asked, and appends their tokens."""
        start = self._clock_ns()
        book = self.book
        plan = book.open_plan
        if plan is None:
            raise PlanError("finish_step without begin_step")
        book.grant(grants)
        restore_bytes, restore_ns = self._restore(restored or {})
        work = book.work()
        chunks = book.chunks()
        forward_ns = sample_ns = inputs_ns = 0
        tokens: list[int] = []
        if chunks:
            tokens, inputs_ns, forward_ns, sample_ns = self._forward(chunks)
        sampled_at = self._clock_ns()
        sampled = book.commit(tokens)
        lazy_bytes, lazy_ns = self._lazy_checkpoints([chunk.state for chunk in chunks])
        ckpt_bytes, ckpt_ns = self._begin_checkpoint
        timing = work.timing(forward_ns=forward_ns, sample_ns=sample_ns, checkpoint_bytes=ckpt_bytes + lazy_bytes,
                             restore_bytes=restore_bytes, checkpoint_ns=ckpt_ns + lazy_ns, restore_ns=restore_ns)
        end = self._clock_ns()
        self.last_phases = FinishPhases(
            prepare_ns=sampled_at - start - forward_ns - sample_ns, inputs_ns=inputs_ns,
            restore_ns=restore_ns, commit_ns=end - sampled_at - lazy_ns, lazy_checkpoint_ns=lazy_ns)
        return StepResult(plan.step_id, sampled, timing, restore_failed_request_ids=work.restore_failed_request_ids)

    def _restore(self, restored: Mapping[str, RestoredKv | None]) -> tuple[int, int]:
        """Copies the fetched checkpoints in; returns the bytes copied and the wall time."""
        book = self.book
        specs = book.pending_restores()
        if not specs:
            return 0, 0
        start = self._clock_ns()
        nbytes = 0
        for spec in specs:
            ok = self.checkpoints.apply_restore(book.state(spec.request_id), spec, restored.get(spec.request_id))
            book.restore(spec.request_id, ok)
            if ok:
                nbytes += (cdiv(spec.num_tokens, self.block_size) - spec.first_block) * self.kv_cache.spec.bytes_per_block
        return nbytes, self._clock_ns() - start

    def _forward(self, chunks: Sequence[Chunk]) -> tuple[list[int], int, int, int]:
        """One forward pass over the step's chunks and the sampling; returns the tokens of the
        chunks that sample (in plan order) and the wall times of building the inputs, the forward
        and the sampling."""
        inputs_start = self._clock_ns()
        # Query-length-1 rows first (the attention backends batch them); plan order otherwise.
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].end - chunks[i].start != 1)
        batch = [chunks[i] for i in order]
        input_ids: list[int] = []
        for c in batch:
            input_ids.extend(c.state.token_ids[c.start:c.end])
        meta, positions = build_metadata([c.end - c.start for c in batch], [c.start for c in batch],
                                         [c.state.block_table for c in batch], self.block_size, self.device)
        batch_row = {i: row for row, i in enumerate(order)}
        sampling = [i for i, c in enumerate(chunks) if c.sample]  # plan order
        logits_indices = torch.tensor([meta.query_start_host[batch_row[i] + 1] - 1 for i in sampling], dtype=torch.long)

        start = self._clock_ns()
        inputs_ns = start - inputs_start
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
        states = [chunks[i].state for i in sampling]
        tokens = sample(logits, [s.sampling for s in states], [s.next_draw for s in states])
        return tokens, inputs_ns, forward_ns, self._clock_ns() - start

    def _lazy_checkpoints(self, states: Sequence[RequestState]) -> tuple[int, int]:
        start = self._clock_ns()
        lazy = self.checkpoints.lazy(states)
        if not lazy:
            return 0, 0
        self._checkpoint_ops.extend(lazy)
        return sum(w.nbytes for w in lazy), self._clock_ns() - start

    def warm_up(self) -> None:
        """Runs a prefill and a decode batch outside any request (first-call allocations, kernel
        compilation, the linears' primitives at every padded row count), writing only into block 0..
        of the cache: call it before leasing blocks."""
        self.model.warm_row_buckets(self.limits.max_num_seqs)
        blocks_needed = cdiv(min(64, self.limits.max_num_batched_tokens), self.block_size)
        prefill = min(64, self.limits.max_num_batched_tokens, blocks_needed * self.block_size,
                      self.kv_cache.num_blocks * self.block_size)
        decodes = min(8, self.limits.max_num_seqs)
        table = list(range(min(blocks_needed, self.kv_cache.num_blocks)))
        for query_lens, computed in (([prefill], [0]), ([1] * decodes, [0] * decodes)):
            meta, positions = build_metadata(query_lens, computed, [table] * len(query_lens), self.block_size, self.device)
            ids = torch.zeros(sum(query_lens), dtype=torch.long, device=self.device)
            rows = torch.tensor([meta.query_start_host[b + 1] - 1 for b in range(len(query_lens))], device=self.device)
            logits = self.model(ids, positions, meta, self.kv_cache, rows)
            sample(logits, [_WARM_UP_SAMPLING] * len(query_lens), [0] * len(query_lens))

    # ---- failure and shutdown ---------------------------------------------------------------

    def abort_step(self, kv_applied: bool) -> tuple[str, ...]:
        """The open step failed. Drops the state of every request it scheduled or admitted (the
        planner recomputes them) and remembers their leases for the next release. When the KV
        Apply did not happen (`kv_applied` false), the step's own releases are kept for the next
        one too. Returns the dropped ids."""
        dropped = self.book.abort(kv_applied)
        for request_id in dropped:
            self._drop_checkpointed_state(request_id)
        return dropped

    def reset(self) -> tuple[str, ...]:
        """Drops every request (the Execute stream closed). Returns the ids whose leases to release."""
        for request_id in self.book.request_ids:
            self._drop_checkpointed_state(request_id)
        return self.book.reset()

    def _drop_checkpointed_state(self, request_id: str) -> None:
        write = self.checkpoints.drop_state(request_id)
        if write is not None:
            self._checkpoint_ops.append(write)
