"""A fake worker that applies plans with the real worker's plan book (llmserve/plan_book/: in
order, releasing before leasing, checking counts) and leases as the real worker does (blocks held
ahead, synced in batches with the kvstore core's lease table), with deterministic sampling so that
a recomputed or moved request must produce the same tokens."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kvstore_svc.core.errors import KvStoreError
from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import RestoreSpec, StepErrorCode
from llmserve.plan_book import LeaseKeeper, PlanBook, PlanError, PlanLimits, RequestState
from scheduler_svc.core import BatchPlan, SchedulerConfig, StepResult
from scheduler_svc.sim.worker import check_worker_leases, lease_ahead, sync_with_store

EOS = 2  # the fake model's end-of-sequence token


def default_token(request_id: str, index: int) -> int:
    """Deterministic 'sampling': output token `index` of a request; never EOS."""
    return 100 + (hash((request_id, index)) % 1000)


_WORKER_ID = "fake-worker"


@dataclass
class FakeWorker:
    """Applies plans with the real worker's plan book, leasing ahead from a lease table of the
    same geometry (`reserve_blocks` per part, synced every `sync_interval_s` of step time, 10 ms a
    step); only the model is fake (`token`).

    `eos_at[request_id] = i` makes output token i an EOS. `fail_steps` fails those step ids as a
    store that refused the step's leases would (nothing leased; the releases stand, as the real
    worker makes them locally first), or, for a step with nothing to lease, as a failed forward
    pass after the leases; either way the step's requests are dropped and the planner recomputes
    them. Any contract violation by the scheduler (a plan the book rejects, more blocks than
    exist, a chunk that ends at the last known token without sampling) fails the step too and is
    recorded in `violations` so that tests can assert there were none.
    """

    config: SchedulerConfig
    eos_at: dict[str, int] = field(default_factory=dict)
    token_fn: Callable[[str, int], int] = default_token
    fail_steps: set[int] = field(default_factory=set)
    reserve_blocks: int = 2
    sync_interval_s: float = 0.0
    violations: list[str] = field(default_factory=list)
    last_step_id: int = -1
    # Requests of a failed step: their later in-flight steps legitimately fail the book's checks.
    tainted: set[str] = field(default_factory=set)
    # Restores planned in steps that failed before the KV Apply (never attempted, never reported).
    num_unattempted_restores: int = 0
    book: PlanBook = field(init=False)
    keeper: LeaseKeeper = field(init=False)
    store: LeaseTable = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.book = PlanBook(c.block_size, PlanLimits(c.max_num_batched_tokens, c.max_num_seqs, c.max_model_len))
        self.keeper = LeaseKeeper(c.num_blocks, self.reserve_blocks, self.sync_interval_s)
        self.store = LeaseTable(ttl_s=1e12)
        self.store.register_pool(_WORKER_ID, c.num_blocks, c.block_size, 1, now=0.0)

    @property
    def now(self) -> float:
        return max(self.last_step_id, 0) * 0.01

    @property
    def requests(self) -> Mapping[str, RequestState]:
        """The worker's per-request state (the book's)."""
        return self.book.states

    @property
    def num_used_blocks(self) -> int:
        """Blocks the worker's requests hold (what the scheduler's ledger mirrors)."""
        return self.keeper.num_held

    @property
    def num_leases(self) -> int:
        """Leases in the store's record (it lags the worker's by at most one sync: `settle`)."""
        return len(self.store.worker(_WORKER_ID).leases)

    @property
    def num_store_blocks_used(self) -> int:
        """Blocks the store counts as taken: leased, or held ahead by the worker."""
        pool = self.store.worker(_WORKER_ID).pool
        return pool.num_blocks - pool.num_free

    def check_invariants(self) -> None:
        """No block held twice; the book's tables, the keeper and the store's record agree."""
        check_worker_leases(self.book, self.keeper, self.store, _WORKER_ID)

    def settle(self) -> None:
        """Tells the store everything now, as the real worker's background syncs do within its
        sync interval (an idle worker gives its reserve back)."""
        keeper = self.keeper
        for _ in range(2):
            if not keeper.pending and (keeper.num_held or not keeper.num_reserved):
                return
            sync_with_store(keeper, self.store, _WORKER_ID, self.now)

    def token(self, request_id: str, index: int) -> int:
        if self.eos_at.get(request_id) == index:
            return EOS
        return self.token_fn(request_id, index)

    def execute(self, plan: BatchPlan) -> StepResult:
        if plan.step_id != self.last_step_id + 1:
            self.violations.append(f"step {plan.step_id} after {self.last_step_id}")
        self.last_step_id = plan.step_id
        book = self.book
        preempted = book.drop(plan)
        self.tainted.difference_update((*plan.finished_request_ids, *plan.preempted_request_ids))
        self.on_dropped(plan, preempted)
        try:
            delta = book.admit(plan)
        except PlanError as err:
            return self._rejected(plan, err)
        if plan.step_id in self.fail_steps and delta.leases:
            self.keeper.release(delta.release_request_ids)
            return self._abort(plan, delta.restores, "injected: kv store refused the leases", kv_applied=True)
        for item in plan.scheduled:
            if not item.sample and item.num_computed_tokens + item.num_tokens == len(book.state(item.request_id).token_ids):
                self.violations.append(f"{item.request_id}: chunk ends at the last known token without sampling")
                return self._abort(plan, delta.restores, "sample flag inconsistent")
        try:
            grants = lease_ahead(self.keeper, self.store, _WORKER_ID, delta, self.now)
        except KvStoreError as err:
            self.violations.append(f"step {plan.step_id}: the store refused the leases: {err}")
            return self._abort(plan, delta.restores, f"RESOURCE_EXHAUSTED: {err}", kv_applied=True)
        if plan.step_id in self.fail_steps:  # nothing to lease, nothing to refuse: the forward pass fails
            self.tainted.update(s.request_id for s in plan.scheduled)
            book.abort(kv_applied=True)
            self.num_unattempted_restores += len(delta.restores)
            return StepResult(plan.step_id, error="injected: the forward pass failed", error_code=StepErrorCode.STEP_FAILED,
                              checkpoint_failed_request_ids=self.take_checkpoint_failures())
        book.grant(grants)
        for spec in delta.restores:
            book.restore(spec.request_id, self.restore(spec))
        work = book.work()
        sampled = book.commit(lambda state: self.token(state.request_id, state.next_draw))
        if self.keeper.wants_sync(self.now):  # the real worker's background sync
            sync_with_store(self.keeper, self.store, _WORKER_ID, self.now)
        return StepResult(plan.step_id, sampled, work.timing(total_ns=10_000_000),
                          restore_failed_request_ids=work.restore_failed_request_ids,
                          checkpoint_failed_request_ids=self.take_checkpoint_failures())

    def _rejected(self, plan: BatchPlan, err: PlanError) -> StepResult:
        if err.request_id and err.request_id in self.tainted:  # expected after a failed step
            self.tainted.update(s.request_id for s in plan.scheduled)
        else:
            self.violations.append(str(err))
        self.num_unattempted_restores += sum(1 for new in plan.new_requests if new.num_computed_tokens > 0)
        return StepResult(plan.step_id, error=str(err), error_code=StepErrorCode.INVALID_PLAN,
                          checkpoint_failed_request_ids=self.take_checkpoint_failures(),
                          rejected_request_id=err.request_id)

    def _abort(self, plan: BatchPlan, restores: Sequence[RestoreSpec], error: str,
               kv_applied: bool = False) -> StepResult:
        self.tainted.update(s.request_id for s in plan.scheduled)
        self.book.abort(kv_applied=kv_applied)
        self.num_unattempted_restores += len(restores)
        return StepResult(plan.step_id, error=error, error_code=StepErrorCode.KV_REFUSED,
                          checkpoint_failed_request_ids=self.take_checkpoint_failures())

    # ---- the host tier's part (tests/unit/kvcheckpoint/fake_tier.py): none here -------------------
    def on_dropped(self, plan: BatchPlan, preempted: list[RequestState]) -> None:
        """The plan's finished and preempted requests are gone (`preempted`: their states)."""

    def restore(self, spec: RestoreSpec) -> bool:
        """Whether a resumed request's checkpoint could be copied in (no host tier: never)."""
        return False

    def take_checkpoint_failures(self) -> tuple[str, ...]:
        return ()
