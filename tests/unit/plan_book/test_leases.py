"""The lease keeper (llmserve/plan_book/leases.py) against the store's own lease table: steps served
from the reserve with no store call, real-time taking the best-effort part of the reserve, the
shortfall a step must ask for, batched syncs that leave the store's record exactly the worker's,
trimming and the idle give-back, retries of a sync whose reply was lost, and a re-declaration to
a store that lost the pool."""

from __future__ import annotations

import pytest

from kvstore_svc.core import InvalidSpecError, OutOfBlocksError, PoolLiveError, SyncOrderError
from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import Holding, LeaseSpec, LeaseSync, PoolDeclaration
from llmserve.plan_book import LeaseKeeper
from llmserve.types import ServiceClass

RT, BE, DL = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT, ServiceClass.DEADLINE
W = "w0"


def _setup(num_blocks: int = 16, reserve: int = 2, interval: float = 1.0) -> tuple[LeaseKeeper, LeaseTable]:
    table = LeaseTable(ttl_s=10.0)
    table.register_pool(W, num_blocks, 4, 1, now=0.0)
    return LeaseKeeper(num_blocks, reserve, interval), table


def _sync(keeper: LeaseKeeper, table: LeaseTable, now: float = 0.0, must: tuple[int, int] = (0, 0)) -> LeaseSync:
    sync = keeper.next_sync(now, *must)
    keeper.synced(table.sync(W, sync, now))
    return sync


def _store_leases(table: LeaseTable) -> dict[str, tuple[ServiceClass, tuple[int, ...]]]:
    return {rid: (lease.service_class, tuple(lease.block_ids)) for rid, lease in table.worker(W).leases.items()}


def _assert_store_matches(keeper: LeaseKeeper, table: LeaseTable) -> None:
    assert keeper.in_flight is None
    record = table.worker(W)
    assert _store_leases(table) == keeper.store_view
    assert set(record.reserve) == keeper.store_reserve
    assert record.pool.num_free == keeper.num_blocks - len(record.reserve) - sum(
        len(lease.block_ids) for lease in record.leases.values())


def test_a_step_within_the_reserve_needs_no_store_call_and_real_time_grows_from_the_low_end() -> None:
    keeper, table = _setup(reserve=3)
    leases = [LeaseSpec("rt", RT, 2), LeaseSpec("be", BE, 2)]
    assert keeper.shortfall(leases) == (2, 2)
    sync = _sync(keeper, table, must=keeper.shortfall(leases))  # the first step fills the reserve
    assert (sync.reserve_low, sync.reserve_high) == (2 + 3, 2 + 3)
    grants = keeper.take(leases)
    assert [g.block_ids for g in grants] == [(0, 1), (15, 14)]
    calls = table.num_syncs
    # Next step: one block each, straight from the reserve.
    more = [LeaseSpec("rt", RT, 1), LeaseSpec("be", BE, 1)]
    assert keeper.shortfall(more) == (0, 0)
    assert [g.block_ids for g in keeper.take(more)] == [(2,), (13,)]
    assert table.num_syncs == calls
    keeper.check()
    # The store learns it in one batched sync: the requests' blocks, exactly.
    sync = _sync(keeper, table, now=1.0)
    assert {h.request_id: h.block_ids for h in sync.assignments} == {"rt": (0, 1, 2), "be": (15, 14, 13)}
    _assert_store_matches(keeper, table)
    assert _store_leases(table) == {"rt": (RT, (0, 1, 2)), "be": (BE, (15, 14, 13))}


def test_real_time_takes_the_best_effort_part_of_the_reserve_before_asking_the_store() -> None:
    keeper, table = _setup(num_blocks=8, reserve=2)
    _sync(keeper, table, must=keeper.shortfall([LeaseSpec("be", BE, 1)]))
    keeper.take([LeaseSpec("be", BE, 1)])
    # low part: 0 1; high part: 5 6 (7 went to "be"); 2 3 4 free at the store.
    rt = [LeaseSpec("rt", RT, 4)]
    assert keeper.shortfall(rt) == (0, 0)
    assert keeper.take(rt)[0].block_ids == (0, 1, 5, 6)
    # The reserve is empty now: a best-effort block must come from the store, from the high end.
    assert keeper.shortfall([LeaseSpec("be", BE, 1)]) == (0, 1)
    assert keeper.shortfall([LeaseSpec("dl", DL, 2), LeaseSpec("rt", RT, 1)]) == (1, 2)
    with pytest.raises(ValueError, match="sync first"):
        keeper.take([LeaseSpec("be", BE, 1)])


def test_the_reserve_is_trimmed_and_given_back_when_idle() -> None:
    keeper, table = _setup(num_blocks=32, reserve=2, interval=0.5)
    _sync(keeper, table, must=keeper.shortfall([LeaseSpec("a", BE, 8)]))
    keeper.take([LeaseSpec("a", BE, 8), LeaseSpec("keep", RT, 1)])
    keeper.release(["a"])  # 8 blocks back to the high part: more than twice the target
    assert keeper.wants_sync(0.0)
    sync = _sync(keeper, table, now=0.0)
    assert len(sync.unreserve_block_ids) == 2 + 8 - 2 and sync.release_request_ids == ()
    _assert_store_matches(keeper, table)
    keeper.release(["keep"])
    assert not keeper.wants_sync(1.0)  # idle from now on, not for the interval yet
    assert keeper.wants_sync(1.5)
    _sync(keeper, table, now=1.5)
    record = table.worker(W)
    assert (keeper.num_reserved, keeper.num_held, len(record.reserve), len(record.leases)) == (0, 0, 0, 0)
    assert record.pool.num_free == 32


def test_changes_reach_the_store_within_the_interval_and_refills_go_at_once() -> None:
    keeper, table = _setup(num_blocks=32, reserve=4, interval=0.5)
    _sync(keeper, table, must=keeper.shortfall([LeaseSpec("a", RT, 1)]))
    keeper.take([LeaseSpec("a", RT, 1)])
    assert not keeper.wants_sync(10.0)  # first seen now; the low part still holds 4
    assert not keeper.wants_sync(10.4)
    assert keeper.wants_sync(10.5)
    _sync(keeper, table, now=10.5)
    keeper.take([LeaseSpec("a", RT, 3)])  # the low part falls to 1 < 4 / 2: refill now
    assert keeper.wants_sync(10.6)
    sync = _sync(keeper, table, now=10.6)
    assert sync.reserve_low == 3 and sync.reserve_high == 0
    _assert_store_matches(keeper, table)


def test_a_readmitted_request_is_released_and_assigned_whole() -> None:
    keeper, table = _setup(reserve=4)
    _sync(keeper, table, must=keeper.shortfall([LeaseSpec("r", BE, 2)]))
    keeper.take([LeaseSpec("r", BE, 2)])
    _sync(keeper, table)
    keeper.release(["r"])
    keeper.take([LeaseSpec("x", BE, 1)])  # takes r's first block
    keeper.take([LeaseSpec("r", RT, 2)])  # r comes back as another class, with other blocks
    sync = _sync(keeper, table)
    assert sync.release_request_ids == ("r",)
    assert {h.request_id for h in sync.assignments} == {"x", "r"}
    _assert_store_matches(keeper, table)
    assert _store_leases(table)["r"] == (RT, keeper.blocks("r"))


def test_a_lost_reply_is_answered_again_and_a_skipped_sequence_is_refused() -> None:
    keeper, table = _setup()
    sync = keeper.next_sync(0.0, 1, 0)
    table.sync(W, sync, 0.0)  # applied, but the reply is lost
    keeper.sync_failed()
    assert keeper.next_sync(0.0) is sync  # the same sync again
    keeper.synced(table.sync(W, sync, 0.1))
    assert table.num_syncs == 1
    _assert_store_matches(keeper, table)
    with pytest.raises(SyncOrderError):
        table.sync(W, LeaseSync(sequence=5), 0.2)


def test_the_store_refuses_blocks_outside_the_reserve_and_too_many_new_ones() -> None:
    keeper, table = _setup(num_blocks=4, reserve=0)
    _sync(keeper, table, must=(1, 0))  # the reserve: block 0
    with pytest.raises(InvalidSpecError, match="not in worker w0's reserve"):
        table.sync(W, LeaseSync(2, assignments=(Holding("a", RT, (3,)),)), 0.0)
    with pytest.raises(OutOfBlocksError):
        table.sync(W, LeaseSync(2, reserve_high=5), 0.0)
    before = (dict(table.worker(W).reserve), _store_leases(table))
    sync = keeper.next_sync(0.0, 0, 9)  # a shortfall larger than the pool: the store refuses it
    with pytest.raises(OutOfBlocksError):
        table.sync(W, sync, 0.0)
    keeper.sync_refused()
    assert (dict(table.worker(W).reserve), _store_leases(table)) == before
    _assert_store_matches(keeper, table)


def test_a_store_that_lost_the_pool_is_rebuilt_from_the_declaration() -> None:
    keeper, table = _setup(reserve=2)
    _sync(keeper, table, must=keeper.shortfall([LeaseSpec("rt", RT, 3), LeaseSpec("be", BE, 2)]))
    keeper.take([LeaseSpec("rt", RT, 3), LeaseSpec("be", BE, 2)])
    keeper.next_sync(1.0)  # in flight when the store dies
    keeper.sync_failed()
    fresh = LeaseTable(ttl_s=10.0)  # the restarted store
    declaration = keeper.declaration()
    fresh.register_pool(W, 16, 4, 1, now=2.0, declaration=declaration)
    keeper.declared(declaration)
    record = fresh.worker(W)
    assert _store_leases(fresh) == {"rt": (RT, keeper.blocks("rt")), "be": (BE, keeper.blocks("be"))}
    assert set(record.reserve) == keeper.store_reserve and len(record.reserve) == keeper.num_reserved
    assert record.pool.num_free == 16 - keeper.num_reserved - keeper.num_held
    # A retried declaration (its reply was lost) is accepted; another one for the live pool is not.
    fresh.register_pool(W, 16, 4, 1, now=2.5, declaration=declaration)
    with pytest.raises(PoolLiveError):
        fresh.register_pool(W, 16, 4, 1, now=3.0, declaration=PoolDeclaration(reserved_low=(0,)))
    # Syncs count from 1 again.
    keeper.release(["be"])
    _sync(keeper, fresh, now=3.0)
    assert set(_store_leases(fresh)) == {"rt"}


def test_a_declaration_naming_a_block_twice_is_refused_and_changes_nothing() -> None:
    table = LeaseTable(ttl_s=10.0)
    bad = PoolDeclaration(held=(Holding("a", RT, (1, 2)), Holding("b", BE, (2,))))
    with pytest.raises(InvalidSpecError, match="declared twice"):
        table.register_pool(W, 8, 4, 1, now=0.0, declaration=bad)
    with pytest.raises(InvalidSpecError, match="outside the pool"):
        table.register_pool(W, 8, 4, 1, now=0.0, declaration=PoolDeclaration(reserved_high=(8,)))
    assert table.worker_ids() == []


def test_a_dead_workers_reserve_expires_with_its_leases() -> None:
    keeper, table = _setup(num_blocks=8, reserve=2)
    _sync(keeper, table, must=keeper.shortfall([LeaseSpec("a", BE, 2)]))
    keeper.take([LeaseSpec("a", BE, 2)])
    _sync(keeper, table)
    assert table.expire(now=10.0) == [W]
    record = table.worker(W)
    assert (record.pool.num_free, len(record.reserve), len(record.leases), record.live) == (8, 0, 0, False)
