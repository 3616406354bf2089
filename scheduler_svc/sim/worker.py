"""The simulated worker: applies a BatchPlan with the real worker's plan book (llmserve/plan_book.py:
validation, drops, admission, block needs, restores, token accounting), minus the model.

It leases KV blocks from the kvstore core's `LeaseTable` exactly as the real worker leases from
the KV store (one atomic apply per step, releases before leases, real-time blocks from the low
end), "samples" one token per request with `sample=True` (the end-of-sequence id when the request
reaches its true output length, a dummy id otherwise), and prices the step with the cost model.
With a `host_tier` (host_tier.py) it also checkpoints preempted requests and restores resumed
ones, and charges the copies.

All the simulator adds to the book is its cost model and its host-tier model. The true output
lengths are the simulated model's knowledge; nothing here is visible to the scheduler core beyond
the sampled token ids, exactly as with a real model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

from kvstore_svc.core.errors import KvStoreError
from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import BatchPlan, StepErrorCode, StepResult
from llmserve.plan_book import PlanBook, PlanError, PlanLimits, RequestState
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.host_tier import SimHostTier

_UNLIMITED = PlanLimits(max_num_batched_tokens=sys.maxsize, max_num_seqs=sys.maxsize, max_model_len=sys.maxsize)


class SimWorker:
    """One simulated worker with its pool registered in `leases` under `worker_id`."""

    def __init__(self, worker_id: str, leases: LeaseTable, block_size: int, cost: CostModel,
                 true_output_tokens: Mapping[str, int], eos_token_id: int, dummy_token_id: int = 7, *,
                 limits: PlanLimits = _UNLIMITED, host_tier: SimHostTier | None = None) -> None:
        if dummy_token_id == eos_token_id:
            raise ValueError("the dummy token id must differ from the EOS id")
        self.worker_id = worker_id
        self.book = PlanBook(block_size, limits)
        self.host_tier = host_tier
        self._leases = leases
        self._cost = cost
        self._checkpoint_failed: list[str] = []  # refused by the host tier, for the next result
        self.num_failed_steps = 0
        true = true_output_tokens.get
        # The simulated model (one call per sampled token): EOS at the request's true output length.
        self._token: Callable[[RequestState], int] = lambda state: (
            eos_token_id if state.next_draw + 1 >= true(state.request_id, 1) else dummy_token_id)

    def execute(self, plan: BatchPlan, now: float) -> tuple[StepResult, float]:
        """Applies one plan at virtual time `now`; returns the result and the step's duration (s).

        A failed step (an invalid plan or a refused lease) samples nothing and, as the real worker
        does, drops the state of the step's requests; it costs only its checkpoint copies.
        """
        book = self.book
        tier = self.host_tier
        preempted = book.drop(plan)
        moved = self._checkpoint(plan, preempted) if tier is not None else 0
        try:
            delta = book.admit(plan)
        except PlanError as err:
            return self._fail(plan, StepErrorCode.INVALID_PLAN, f"invalid plan: {err}"), self._transfer_s(moved)
        try:
            applied = self._leases.apply(self.worker_id, delta.release_request_ids, delta.leases, now)
        except KvStoreError as err:
            book.abort(kv_applied=False)  # the store changed nothing: the releases wait too
            return self._fail(plan, StepErrorCode.KV_REFUSED, f"KV lease refused: {err}"), self._transfer_s(moved)
        book.grant(applied.grants)
        for spec in delta.restores:
            copied = tier.restore(spec.request_id, spec.num_tokens) if tier is not None else None
            book.restore(spec.request_id, copied is not None)
            moved += copied or 0
        work = book.work()
        sampled = book.commit(self._token)
        dt = self._cost.step_time(work.num_prefill_tokens, work.num_decode_seqs, work.num_kv_tokens_read) \
            if plan.scheduled else 0.0
        if tier is not None:
            dt += self._transfer_s(moved)
        ns = int(dt * 1e9)
        reports: tuple[str, ...] = ()
        if self._checkpoint_failed:
            reports, self._checkpoint_failed = tuple(self._checkpoint_failed), []
        return StepResult(plan.step_id, sampled, work.timing(forward_ns=ns, total_ns=ns),
                          restore_failed_request_ids=work.restore_failed_request_ids,
                          checkpoint_failed_request_ids=reports), dt

    def _checkpoint(self, plan: BatchPlan, preempted: Sequence[RequestState]) -> int:
        """Host-tier writes and drops of the plan's dropped requests; returns the bytes copied."""
        tier = self.host_tier
        assert tier is not None
        moved = 0
        if plan.checkpoint_request_ids:
            by_id = {state.request_id: state for state in preempted}
            for rid in plan.checkpoint_request_ids:
                state = by_id.get(rid)
                if state is None or state.num_computed == 0:
                    continue
                copied = tier.checkpoint(rid, state.num_computed)
                if copied is None:
                    self._checkpoint_failed.append(rid)
                else:
                    moved += copied
        for rid in plan.drop_checkpoint_request_ids:
            tier.drop(rid)
        return moved

    def _transfer_s(self, nbytes: int) -> float:
        return self.host_tier.transfer_s(nbytes) if self.host_tier is not None else 0.0

    def _fail(self, plan: BatchPlan, code: StepErrorCode, message: str) -> StepResult:
        # The scheduler re-queues the step's requests (recompute) and releases their leases in a
        # later plan; the book releases what it dropped with the next apply.
        self.num_failed_steps += 1
        return StepResult(plan.step_id, (), None, message, error_code=code)

    @property
    def num_requests(self) -> int:
        return len(self.book)

    def check_invariants(self) -> None:
        """Asserts: no block id is held twice, and every table matches its lease in the store."""
        check_book_against_leases(self.book, self._leases, self.worker_id)


def check_book_against_leases(book: PlanBook, leases: LeaseTable, worker_id: str) -> None:
    """Asserts that a worker's plan book and the store's leases agree: no block id is held twice,
    every block table is exactly its lease, the pool's use is the tables' blocks plus those still
    to be released, and no lease outlives its request's state unless it is queued for release."""
    seen: set[int] = set()
    record = leases.worker(worker_id)
    states = book.states
    for rid, state in states.items():
        for block in state.block_table:
            assert block not in seen, f"block {block} held twice (second holder {rid})"
            seen.add(block)
        lease = record.leases.get(rid)
        held = list(lease.block_ids) if lease else []
        assert held == state.block_table, f"{rid}: worker table {state.block_table} != lease {held}"
    unreleased = set(book.unreleased)
    pending = sum(len(lease.block_ids) for rid, lease in record.leases.items() if rid in unreleased)
    assert len(seen) + pending == record.pool.num_blocks - record.pool.num_free, "pool use != blocks in tables"
    for rid in record.leases:
        assert rid in states or rid in unreleased, f"lease of {rid} outlived the request's state"
