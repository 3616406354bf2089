"""The simulated worker: applies a BatchPlan with the real worker's plan book (llmserve/plan_book.py:
validation, drops, admission, block needs, restores, token accounting), minus the model.

It leases KV blocks exactly as the real worker does: from the blocks it holds ahead (the plan
book's `LeaseKeeper`: releases before leases, real-time blocks from the low end), syncing with
the kvstore core's `LeaseTable` when those run short and, after a step, when a sync is due (the
real worker's background syncs; they cost no simulated time, as they are off the step's path).
It "samples" one token per request with `sample=True` (the end-of-sequence id when the request
reaches its true output length, a dummy id otherwise), and prices the step with the cost model.
With a `host_tier` (host_tier.py) it also checkpoints preempted requests and restores resumed
ones, and charges the copies.

With a `prefix` cache (the live worker's WorkerPrefixCache, its host tier's copies counted by a
`CountingMover`) it runs the live worker's caching lease keeper too: hits start block tables,
cached blocks outlive their requests in the cache's lease, the store's shortfall is reclaimed
from the cache (demoting to its host tier), and each result carries the cache's report, as the
live worker's does; a promotion's and a demotion's copies are charged to the step as copies
(`prefix_copy_s_per_block`), not as prefill.

All the simulator adds to the book is its cost model and its host-tier model. The true output
lengths are the simulated model's knowledge; nothing here is visible to the scheduler core beyond
the sampled token ids, exactly as with a real model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

from kvstore_svc.core.errors import KvStoreError
from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import BatchPlan, Grant, KvDelta, StepErrorCode, StepResult
from llmserve.plan_book import (CACHE_HOLDER, CachingLeaseKeeper, LeaseKeeper, PlanBook, PlanError, PlanLimits,
                                RequestState, WorkerPrefixCache, auto_reserve_blocks)
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.host_tier import SimHostTier

_UNLIMITED = PlanLimits(max_num_batched_tokens=sys.maxsize, max_num_seqs=sys.maxsize, max_model_len=sys.maxsize)


class SimWorker:
    """One simulated worker with its pool registered in `leases` under `worker_id`."""

    def __init__(self, worker_id: str, leases: LeaseTable, block_size: int, cost: CostModel,
                 true_output_tokens: Mapping[str, int], eos_token_id: int, dummy_token_id: int = 7, *,
                 limits: PlanLimits = _UNLIMITED, host_tier: SimHostTier | None = None,
                 reserve_blocks: int | None = None, sync_interval_s: float = 1.0,
                 prefix: WorkerPrefixCache | None = None, prefix_copy_s_per_block: float = 0.0) -> None:
        """`reserve_blocks` per part of the blocks held ahead (None: the real worker's default for
        the pool and the step limit), `sync_interval_s` as the worker's setting (simulated time)."""
        if dummy_token_id == eos_token_id:
            raise ValueError("the dummy token id must differ from the EOS id")
        self.worker_id = worker_id
        self.book = PlanBook(block_size, limits, prefix=prefix)
        self.prefix = prefix
        self._copy_s_per_block = prefix_copy_s_per_block
        self._moved_blocks = 0  # the prefix mover's count at the last step
        num_blocks = leases.worker(worker_id).geometry.num_blocks
        if reserve_blocks is None:
            reserve_blocks = auto_reserve_blocks(limits.max_num_batched_tokens, block_size, num_blocks)
        self.keeper = LeaseKeeper(num_blocks, reserve_blocks, sync_interval_s) if prefix is None else \
            CachingLeaseKeeper(num_blocks, reserve_blocks, sync_interval_s, prefix=prefix)
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
            return self._fail(plan, StepErrorCode.INVALID_PLAN, f"invalid plan: {err}", err.request_id), \
                self._transfer_s(moved)
        try:
            grants = lease_ahead(self.keeper, self._leases, self.worker_id, delta, now)
        except KvStoreError as err:
            book.abort(kv_applied=True)  # nothing leased; the releases went back to the reserve
            return self._fail(plan, StepErrorCode.KV_REFUSED, f"KV lease refused: {err}"), self._transfer_s(moved)
        book.grant(grants)
        for spec in delta.restores:
            copied = tier.restore(spec.request_id, spec.num_tokens, spec.first_block) if tier is not None else None
            book.restore(spec.request_id, copied is not None)
            moved += copied or 0
        work = book.work()
        sampled = book.commit(self._token)
        dt = self._cost.step_time(work.num_prefill_tokens, work.num_decode_seqs, work.num_kv_tokens_read) \
            if plan.scheduled else 0.0
        if tier is not None:
            dt += self._transfer_s(moved)
        report = None
        if self.prefix is not None:
            mover = self.prefix.mover
            if mover is not None:  # the host tier's demotions and promotions of this step: copies
                total = mover.blocks_in + mover.blocks_out  # type: ignore[attr-defined]
                dt += (total - self._moved_blocks) * self._copy_s_per_block
                self._moved_blocks = total
            report = self.prefix.take_report()
        ns = int(dt * 1e9)
        if self.keeper.wants_sync(now):
            sync_with_store(self.keeper, self._leases, self.worker_id, now)
        reports: tuple[str, ...] = ()
        if self._checkpoint_failed:
            reports, self._checkpoint_failed = tuple(self._checkpoint_failed), []
        cached, evicted, demoted = report if report is not None else ((), (), ())
        return StepResult(plan.step_id, sampled, work.timing(forward_ns=ns, total_ns=ns),
                          restore_failed_request_ids=work.restore_failed_request_ids,
                          checkpoint_failed_request_ids=reports, cached_block_hashes=cached,
                          evicted_block_hashes=evicted, demoted_block_hashes=demoted), dt

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

    def _fail(self, plan: BatchPlan, code: StepErrorCode, message: str, rejected_request_id: str = "") -> StepResult:
        # The scheduler re-queues the step's requests (recompute) and releases their leases in a
        # later plan; the book releases what it dropped with the next apply.
        self.num_failed_steps += 1
        return StepResult(plan.step_id, (), None, message, error_code=code, rejected_request_id=rejected_request_id)

    @property
    def num_requests(self) -> int:
        return len(self.book)

    @property
    def num_used_blocks(self) -> int:
        """Blocks held by requests (those gone included until their release with the next step),
        a shared cached block once; not the unreferenced cached blocks (free space)."""
        num_held = self.keeper.num_held
        return num_held - self.prefix.num_reclaimable if self.prefix is not None else num_held

    def settle(self, now: float) -> None:
        """Tells the store everything now, as the real worker's background syncs do within its sync
        interval (an idle worker gives its reserve back)."""
        keeper = self.keeper
        for _ in range(2):
            if not keeper.pending and (keeper.num_held or not keeper.num_reserved):
                return
            sync_with_store(keeper, self._leases, self.worker_id, now)

    def check_invariants(self) -> None:
        """Asserts: no block id is held twice, every table is exactly what the worker leased, and
        the store's record is the worker's (as of its last sync)."""
        check_worker_leases(self.book, self.keeper, self._leases, self.worker_id)


def sync_with_store(keeper: LeaseKeeper, leases: LeaseTable, worker_id: str, now: float, must_low: int = 0,
                    must_high: int = 0) -> None:
    """One sync of the keeper with the store core, answered at once (KvStoreError: refused)."""
    sync = keeper.next_sync(now, must_low, must_high)
    try:
        reply = leases.sync(worker_id, sync, now)
    except KvStoreError:
        keeper.sync_refused()
        raise
    keeper.synced(reply, on_step_path=bool(must_low or must_high))


def lease_ahead(keeper: LeaseKeeper, leases: LeaseTable, worker_id: str, delta: KvDelta,
                now: float) -> tuple:  # tuple[Grant, ...]
    """A step's releases and leases as the real worker's shell does them: from the blocks held
    ahead, syncing with the store first only for what those lack (KvStoreError: refused)."""
    keeper.release(delta.release_request_ids)
    if isinstance(keeper, CachingLeaseKeeper):  # what the store cannot give: from the cache, locally
        keeper.reclaim_cached(delta.leases)
    must = keeper.shortfall(delta.leases)
    if must != (0, 0):
        sync_with_store(keeper, leases, worker_id, now, *must)
    return keeper.take(delta.leases)


def check_worker_leases(book: PlanBook, keeper: LeaseKeeper, leases: LeaseTable, worker_id: str) -> None:
    """Asserts that a worker's plan book, its lease keeper and the store agree: no block id is
    held twice, every block table is exactly the request's blocks in the keeper, the keeper holds
    blocks only for requests with a state or queued for release, and (no sync in flight) the
    store's record is exactly the keeper's copy of it, with the pool's counts adding up."""
    keeper.check()
    states = book.states
    prefix = book.prefix
    for rid, state in states.items():
        if prefix is None:
            assert tuple(state.block_table) == keeper.blocks(rid), (
                f"{rid}: worker table {state.block_table} != its blocks {keeper.blocks(rid)}")
            continue
        # With a prefix cache a table starts with shared cached blocks that another lease holds.
        own = keeper.blocks(rid)
        assert set(own) <= set(state.block_table), f"{rid}: leased blocks outside its table"
        assert all(prefix.is_cached_block(b) for b in state.block_table if b not in set(own)), (
            f"{rid}: a block of its table is neither its own nor cached")
    unreleased = set(book.unreleased)
    for rid in keeper.request_ids:
        assert rid in states or rid in unreleased or rid == CACHE_HOLDER or not keeper.blocks(rid), (
            f"blocks of {rid} outlived its state")
    record = leases.worker(worker_id)
    store_leases = {rid: (lease.service_class, tuple(lease.block_ids)) for rid, lease in record.leases.items()}
    leased = [b for _, blocks in store_leases.values() for b in blocks]
    assert len(leased) == len(set(leased)) and not set(leased) & set(record.reserve), "a block twice in the store"
    assert record.pool.num_free + len(record.reserve) + len(leased) == record.pool.num_blocks, "store blocks lost"
    if keeper.in_flight is None:
        assert store_leases == keeper.store_view, "the store's leases are not what the worker told it"
        assert set(record.reserve) == keeper.store_reserve, "the store's reserve is not what the worker told it"
        assert record.pool.num_free == keeper.num_free_at_store, "the store's free count != what the worker holds"
