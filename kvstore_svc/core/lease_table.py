"""Leases of KV blocks: which request of which worker holds which blocks, and until when.

One `BlockPool` per registered worker. A lease is keyed by (worker_id, request_id) and holds an
ordered list of block ids of one service class. Liveness is per worker: any call from a worker
(register, apply, sync, heartbeat) renews all of its leases, and a worker silent for `ttl_s` loses
them all at the next `expire()`. Its pool record stays (so its counters survive) but is no longer
live: it must register again before leasing.

Two ways to lease. `apply` grants blocks to requests directly (one call per change). `sync` serves
a worker that leases ahead (llmserve/plan_book/leases.py): the worker holds a reserve of blocks
taken from either end, hands them to its requests itself, and reports in batches which requests
hold which blocks; its releases go back to its reserve (checked and applied in
`kvstore_svc/core/lease_sync.py`). Every block of a pool is in exactly one place: free, in the
worker's reserve, or in one request's lease (`kvstore_svc/core/worker_pool.py`).

After the store lost a pool (it restarted; the worker's leases expired) the worker re-declares
everything it holds in `register_pool(..., declaration=...)`, which is accepted only when no live
pool exists, and rebuilds the pool with exactly those blocks taken
(`kvstore_svc/core/declaration.py`).

Every mutating method validates everything first and then mutates, so a refused call changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmserve.plan import Grant, LeaseSpec, LeaseSync, PoolDeclaration, SyncReply

from kvstore_svc.core.block_pool import BlockPool
from kvstore_svc.core.classes import ServiceClass, pool_end
from kvstore_svc.core.declaration import holds_exactly, rebuild
from kvstore_svc.core.errors import (
    GeometryConflictError,
    InvalidSpecError,
    OutOfBlocksError,
    PoolLiveError,
    SyncOrderError,
    UnknownWorkerError,
)
from kvstore_svc.core.lease_sync import apply_sync, check_sync
from kvstore_svc.core.worker_pool import Lease, PoolGeometry, WorkerPool


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """One grant per lease spec (same order), and the blocks actually released."""

    grants: tuple[Grant, ...]
    num_released: int


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """`known` is False when the worker has no live pool (it must re-register)."""

    known: bool
    num_leases: int


class LeaseTable:
    """All workers' pools and leases. Times are seconds from the injected clock."""

    def __init__(self, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise InvalidSpecError(f"lease TTL must be positive, got {ttl_s}")
        self.ttl_s = ttl_s
        self._workers: dict[str, WorkerPool] = {}
        # Counters since start (read by the metrics exporter).
        self.num_expired_leases = 0
        self.num_refused_releases = 0  # releases of expired or unknown leases: released nothing
        self.num_dropped_on_register = 0  # leases dropped because their worker re-registered
        self.num_refused_applies = 0  # applies and syncs refused for lack of blocks
        self.num_syncs = 0  # syncs applied (retries not counted)
        self.num_declared_pools = 0  # pools rebuilt from a worker's declaration

    # --- pools -------------------------------------------------------------------------------

    def register_pool(self, worker_id: str, num_blocks: int, block_size: int, bytes_per_block: int, now: float,
                      declaration: PoolDeclaration | None = None) -> None:
        """Creates the worker's pool, or re-attaches it, dropping every lease it held.

        A live worker must re-register with the same geometry (`GeometryConflictError`
        otherwise); an expired or new one may bring any geometry. With a non-empty `declaration`
        (a worker re-declaring what it holds to a store that lost its pool) the new pool has
        exactly the declared blocks taken; refused with `PoolLiveError` while the worker's pool is
        live (unless it already is exactly the declared one: a retried declaration), and with
        `InvalidSpecError` for a block outside the pool or declared twice.
        """
        if not worker_id:
            raise InvalidSpecError("worker_id is empty: name the worker")
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size), ("bytes_per_block", bytes_per_block)):
            if value <= 0:
                raise InvalidSpecError(f"{name} must be positive, got {value}")
        geometry = PoolGeometry(num_blocks, block_size, bytes_per_block)
        old = self._workers.get(worker_id)
        if old is not None and old.live and old.geometry != geometry:
            raise GeometryConflictError(
                f"worker {worker_id} is live with {old.geometry.describe()}, not {geometry.describe()}: "
                "stop it (or wait for its leases to expire) before changing its pool"
            )
        declared = declaration is not None and not declaration.empty
        if declared and old is not None and old.live:
            assert declaration is not None
            if old.sequence == 0 and holds_exactly(old, declaration):
                old.last_seen = now  # the same declaration again (its reply was lost)
                return
            raise PoolLiveError(
                f"worker {worker_id} declared its blocks, but the store holds a live pool for it: a declaration "
                "only rebuilds a pool the store lost (wait for the live one to expire, or register without blocks)"
            )
        record = WorkerPool(worker_id=worker_id, geometry=geometry, pool=BlockPool(num_blocks), last_seen=now,
                            num_expired_leases=old.num_expired_leases if old is not None else 0)
        if declared:
            assert declaration is not None
            rebuild(record, declaration)  # validates everything before the record is kept
            self.num_declared_pools += 1
        if old is not None and old.live:
            self.num_dropped_on_register += len(old.leases)
        self._workers[worker_id] = record

    def worker(self, worker_id: str) -> WorkerPool:
        """The worker's pool record, live or expired; `UnknownWorkerError` when never registered."""
        record = self._workers.get(worker_id)
        if record is None:
            raise UnknownWorkerError(f"worker {worker_id!r} has no pool: call RegisterPool first")
        return record

    def worker_ids(self) -> list[str]:
        """Every worker that ever registered, in registration order."""
        return list(self._workers)

    def lease(self, worker_id: str, request_id: str) -> Lease | None:
        """The live lease of a request, or None. Do not mutate it."""
        record = self._workers.get(worker_id)
        if record is None or not record.live:
            return None
        return record.leases.get(request_id)

    # --- leases ------------------------------------------------------------------------------

    def apply(
        self, worker_id: str, release_request_ids: Iterable[str], lease_specs: Sequence[LeaseSpec], now: float
    ) -> ApplyResult:
        """Releases the named requests' blocks, then grants every spec, or changes nothing.

        A release of a request without a lease (expired, already released, never leased) releases
        nothing and is counted in `num_refused_releases`. Raises `UnknownWorkerError` for a worker
        without a live pool, `InvalidSpecError` for a bad spec (empty or repeated request id, a
        class different from the request's lease), `OutOfBlocksError` when the specs ask for more
        blocks than are free after the releases.
        """
        record = self._live(worker_id)
        releases = list(dict.fromkeys(release_request_ids))  # repeats release once
        released_leases = [record.leases[r] for r in releases if r in record.leases]
        _check_specs(record, lease_specs, released={lease.request_id for lease in released_leases})
        num_released = sum(len(lease.block_ids) for lease in released_leases)
        asked = sum(spec.num_blocks for spec in lease_specs)
        free_after = record.pool.num_free + num_released
        if asked > free_after:
            self.num_refused_applies += 1
            raise OutOfBlocksError(
                f"worker {worker_id}: {asked} blocks asked, {free_after} free "
                f"({num_released} of them from releases in this call); nothing changed",
                requested=asked,
                free=free_after,
            )
        # Everything checked: mutate. Allocation cannot fail from here on.
        record.last_seen = now
        self.num_refused_releases += len(releases) - len(released_leases)
        for lease in released_leases:
            record.pool.free(lease.block_ids)
            del record.leases[lease.request_id]
        grants = []
        for spec in lease_specs:
            block_ids = record.pool.allocate(spec.num_blocks, pool_end(spec.service_class))
            if block_ids:
                record.add_to_lease(spec.request_id, spec.service_class, block_ids)
            grants.append(Grant(spec.request_id, tuple(block_ids)))
        return ApplyResult(tuple(grants), num_released)

    def sync(self, worker_id: str, sync: LeaseSync, now: float) -> SyncReply:
        """Applies a leasing-ahead worker's batch of changes (`LeaseSync`, in its documented order),
        or changes nothing. A retry of the last sync (same sequence) answers its reply again.

        Raises `UnknownWorkerError` without a live pool, `SyncOrderError` for a sequence that is
        neither the next nor the last, `InvalidSpecError` for an assignment of a block not in the
        worker's reserve (after the releases) or given twice, a bad id or class, an unreserved
        block not in the reserve, and `OutOfBlocksError` when the new reserve blocks are more
        than the free ones (after the unreserved come back).
        """
        record = self._live(worker_id)
        if sync.sequence == record.sequence and record.last_sync is not None:
            record.last_seen = now
            return record.last_sync
        if sync.sequence != record.sequence + 1:
            raise SyncOrderError(
                f"worker {worker_id}: sync {sync.sequence} after {record.sequence}: the store and the worker disagree "
                "about the pool; register it again"
            )
        try:
            checked = check_sync(record, sync)
        except OutOfBlocksError:
            self.num_refused_applies += 1
            raise
        record.last_seen = now
        self.num_refused_releases += checked.num_releases - len(checked.released_leases)
        self.num_syncs += 1
        return apply_sync(record, sync, checked)

    def heartbeat(self, worker_id: str, now: float) -> HeartbeatResult:
        """Renews all of a live worker's leases. An unknown or expired worker stays so."""
        record = self._workers.get(worker_id)
        if record is None or not record.live:
            return HeartbeatResult(known=False, num_leases=0)
        record.last_seen = now
        return HeartbeatResult(known=True, num_leases=len(record.leases))

    def expire(self, now: float) -> list[str]:
        """Drops the leases of every worker silent for `ttl_s` or longer; returns those workers."""
        expired = []
        for record in self._workers.values():
            if record.live and now - record.last_seen >= self.ttl_s:
                for lease in record.leases.values():
                    record.pool.free(lease.block_ids)
                record.pool.free(record.reserve)
                record.num_expired_leases += len(record.leases)
                self.num_expired_leases += len(record.leases)
                record.leases.clear()
                record.reserve.clear()
                record.live = False
                expired.append(record.worker_id)
        return expired

    # --- helpers -----------------------------------------------------------------------------

    def _live(self, worker_id: str) -> WorkerPool:
        record = self.worker(worker_id)
        if not record.live:
            raise UnknownWorkerError(
                f"worker {worker_id!r} was silent for the lease TTL ({self.ttl_s:g} s) and lost its leases: "
                "call RegisterPool again"
            )
        return record


def _check_specs(record: WorkerPool, lease_specs: Sequence[LeaseSpec], released: set[str]) -> None:
    """Each spec names a request once, a class (the class of its lease, unless released first)
    and a non-negative count."""
    seen: set[str] = set()
    for index, spec in enumerate(lease_specs):
        if not spec.request_id:
            raise InvalidSpecError(f"leases[{index}].request_id is empty")
        if spec.request_id in seen:
            raise InvalidSpecError(f"leases[{index}]: request {spec.request_id} appears twice; merge its specs")
        seen.add(spec.request_id)
        if spec.num_blocks < 0:
            raise InvalidSpecError(f"leases[{index}].num_blocks must be >= 0, got {spec.num_blocks}")
        if spec.service_class is ServiceClass.UNSPECIFIED:
            raise InvalidSpecError(f"leases[{index}]: request {spec.request_id} has no service class")
        record.check_class(spec.request_id, spec.service_class, released, f"leases[{index}]")
