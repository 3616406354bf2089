"""`sync`: a batch of changes from a worker that leases ahead (llmserve/plan_book/leases.py).

The worker holds a reserve of blocks taken from either end, hands them to its requests itself,
and reports in batches which requests hold which blocks; its releases go back to its reserve.
A `LeaseSync` is applied in its documented order: releases (to the reserve), assignments of
reserve blocks to requests, blocks leaving the reserve, then new reserve blocks from the low and
the high end. `check_sync` validates all of it against the record and `apply_sync` then mutates,
so a refused sync changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.plan import LeaseSync, SyncReply

from kvstore_svc.core.classes import PoolEnd
from kvstore_svc.core.declaration import check_holding
from kvstore_svc.core.errors import InvalidSpecError, OutOfBlocksError
from kvstore_svc.core.worker_pool import Lease, WorkerPool


@dataclass(frozen=True, slots=True)
class CheckedSync:
    """What a valid sync releases: the leases named (once each) and their blocks."""

    num_releases: int  # distinct request ids named, with or without a lease
    released_leases: tuple[Lease, ...]
    num_released_blocks: int


def check_sync(record: WorkerPool, sync: LeaseSync) -> CheckedSync:
    """Raises `InvalidSpecError` for an assignment of a block not in the worker's reserve (after
    the releases) or given twice, a bad id or class, an unreserved block not in the reserve, and
    `OutOfBlocksError` when the new reserve blocks are more than the free ones (after the
    unreserved come back)."""
    releases = list(dict.fromkeys(sync.release_request_ids))
    released_leases = tuple(record.leases[r] for r in releases if r in record.leases)
    released = {lease.request_id for lease in released_leases}
    released_blocks = {block for lease in released_leases for block in lease.block_ids}
    taken: set[int] = set()  # reserve blocks this sync assigns or unreserves

    def check_reserved(block: int, where: str) -> None:
        if block in taken or not (block in record.reserve or block in released_blocks):
            raise InvalidSpecError(f"{where}: block {block} is not in worker {record.worker_id}'s reserve")
        taken.add(block)

    seen: set[str] = set()
    for index, holding in enumerate(sync.assignments):
        where = f"assignments[{index}]"
        check_holding(holding, where, seen)
        record.check_class(holding.request_id, holding.service_class, released, where)
        for block in holding.block_ids:
            check_reserved(block, where)
    for block in dict.fromkeys(sync.unreserve_block_ids):
        check_reserved(block, "unreserve_block_ids")
    if len(set(sync.unreserve_block_ids)) != len(sync.unreserve_block_ids):
        raise InvalidSpecError("unreserve_block_ids names a block twice")
    if sync.reserve_low < 0 or sync.reserve_high < 0:
        raise InvalidSpecError("reserve_low and reserve_high must be >= 0")
    asked = sync.reserve_low + sync.reserve_high
    free_after = record.pool.num_free + len(sync.unreserve_block_ids)
    if asked > free_after:
        raise OutOfBlocksError(
            f"worker {record.worker_id}: {asked} reserve blocks asked, {free_after} free; nothing changed",
            requested=asked, free=free_after,
        )
    return CheckedSync(len(releases), released_leases, len(released_blocks))


def apply_sync(record: WorkerPool, sync: LeaseSync, checked: CheckedSync) -> SyncReply:
    """Applies a sync that `check_sync` accepted; nothing can fail here."""
    reserve = record.reserve
    for lease in checked.released_leases:
        for block in lease.block_ids:
            end = record.pool.end_of(block)
            assert end is not None
            reserve[block] = end
        del record.leases[lease.request_id]
    for holding in sync.assignments:
        for block in holding.block_ids:
            del reserve[block]
        record.add_to_lease(holding.request_id, holding.service_class, holding.block_ids)
    for block in sync.unreserve_block_ids:
        del reserve[block]
    record.pool.free(sync.unreserve_block_ids)
    low = record.pool.allocate(sync.reserve_low, PoolEnd.LOW)
    high = record.pool.allocate(sync.reserve_high, PoolEnd.HIGH)
    for block in low:
        reserve[block] = PoolEnd.LOW
    for block in high:
        reserve[block] = PoolEnd.HIGH
    reply = SyncReply(sync.sequence, tuple(low), tuple(high), checked.num_released_blocks)
    record.sequence = sync.sequence
    record.last_sync = reply
    return reply
