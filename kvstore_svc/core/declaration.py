"""A worker's re-declaration of what it holds, to a store that lost its pool.

After the store restarted (or the worker's leases expired) the worker declares every block it
holds, by request and class, and its reserve; `LeaseTable.register_pool` rebuilds the pool with
exactly those blocks taken. The checks here are shared with `sync`'s assignments (`check_holding`).
"""

from __future__ import annotations

from llmserve.plan import Holding, PoolDeclaration

from kvstore_svc.core.classes import PoolEnd, ServiceClass, pool_end
from kvstore_svc.core.errors import InvalidSpecError
from kvstore_svc.core.worker_pool import Lease, WorkerPool


def check_holding(holding: Holding, where: str, seen: set[str]) -> None:
    """A holding names a request (once per call) and a class, and no block twice."""
    if not holding.request_id:
        raise InvalidSpecError(f"{where}.request_id is empty")
    if holding.request_id in seen:
        raise InvalidSpecError(f"{where}: request {holding.request_id} appears twice; merge its blocks")
    seen.add(holding.request_id)
    if holding.service_class is ServiceClass.UNSPECIFIED:
        raise InvalidSpecError(f"{where}: request {holding.request_id} has no service class")
    if len(set(holding.block_ids)) != len(holding.block_ids):
        raise InvalidSpecError(f"{where}: request {holding.request_id} names a block twice")


def rebuild(record: WorkerPool, declaration: PoolDeclaration) -> None:
    """Takes the declared blocks in a new record's empty pool (InvalidSpecError: a bad
    declaration; the record is then thrown away)."""
    seen: set[str] = set()
    for index, holding in enumerate(declaration.held):
        check_holding(holding, f"held[{index}]", seen)
    pool = record.pool
    # `take` checks range and repeats, across calls too (a taken block is not free any more).
    for holding in declaration.held:
        pool.take(holding.block_ids, pool_end(holding.service_class))
        record.leases[holding.request_id] = Lease(record.worker_id, holding.request_id, holding.service_class,
                                                  list(holding.block_ids))
    for end, blocks in ((PoolEnd.LOW, declaration.reserved_low), (PoolEnd.HIGH, declaration.reserved_high)):
        pool.take(blocks, end)
        for block in blocks:
            record.reserve[block] = end


def holds_exactly(record: WorkerPool, declaration: PoolDeclaration) -> bool:
    """Whether a live pool is exactly what the declaration describes."""
    leases = {rid: (lease.service_class, tuple(lease.block_ids)) for rid, lease in record.leases.items()}
    declared = {h.request_id: (h.service_class, tuple(h.block_ids)) for h in declaration.held}
    reserve = {b: PoolEnd.LOW for b in declaration.reserved_low} | {b: PoolEnd.HIGH for b in declaration.reserved_high}
    return leases == declared and record.reserve == reserve
