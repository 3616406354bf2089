"""Leases of KV blocks: which request of which worker holds which blocks, and until when.

One `BlockPool` per registered worker. A lease is keyed by (worker_id, request_id) and holds an
ordered list of block ids of one service class. Liveness is per worker: any call from a worker
(register, apply, heartbeat) renews all of its leases, and a worker silent for `ttl_s` loses them
all at the next `expire()`. Its pool record stays (so its counters survive) but is no longer live:
it must register again before leasing.

Every mutating method validates everything first and then mutates, so a refused call changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmserve.plan import Grant, LeaseSpec

from kvstore_svc.core.block_pool import BlockPool
from kvstore_svc.core.classes import ServiceClass, pool_end
from kvstore_svc.core.errors import GeometryConflictError, InvalidSpecError, OutOfBlocksError, UnknownWorkerError


@dataclass(frozen=True, slots=True)
class PoolGeometry:
    """The shape of a worker's KV pool."""

    num_blocks: int
    block_size: int  # tokens per block
    bytes_per_block: int  # one block across layers, K and V


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


@dataclass(slots=True)
class Lease:
    """Blocks held by one request of one worker."""

    worker_id: str
    request_id: str
    service_class: ServiceClass
    block_ids: list[int]


@dataclass(slots=True)
class WorkerPool:
    """A worker's pool, its leases and its liveness."""

    worker_id: str
    geometry: PoolGeometry
    pool: BlockPool
    last_seen: float
    live: bool = True
    leases: dict[str, Lease] = field(default_factory=dict)
    num_expired_leases: int = 0  # since the store started, across re-registrations


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
        self.num_refused_applies = 0  # applies refused for lack of blocks

    # --- pools -------------------------------------------------------------------------------

    def register_pool(self, worker_id: str, num_blocks: int, block_size: int, bytes_per_block: int, now: float) -> None:
        """Creates the worker's pool, or re-attaches it, dropping every lease it held.

        A live worker must re-register with the same geometry (`GeometryConflictError`
        otherwise); an expired or new one may bring any geometry.
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
                f"worker {worker_id} is live with {_describe(old.geometry)}, not {_describe(geometry)}: "
                "stop it (or wait for its leases to expire) before changing its pool"
            )
        expired_before = 0
        if old is not None:
            expired_before = old.num_expired_leases
            if old.live:
                self.num_dropped_on_register += len(old.leases)
        self._workers[worker_id] = WorkerPool(
            worker_id=worker_id,
            geometry=geometry,
            pool=BlockPool(num_blocks),
            last_seen=now,
            num_expired_leases=expired_before,
        )

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
        released = set(lease.request_id for lease in released_leases)
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
            held = record.leases.get(spec.request_id)
            if held is not None and spec.request_id not in released and held.service_class is not spec.service_class:
                raise InvalidSpecError(
                    f"leases[{index}]: request {spec.request_id} holds {held.service_class.label} blocks, "
                    f"cannot add {spec.service_class.label} ones"
                )
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
                lease = record.leases.get(spec.request_id)
                if lease is None:
                    lease = Lease(worker_id, spec.request_id, spec.service_class, [])
                    record.leases[spec.request_id] = lease
                lease.block_ids.extend(block_ids)
            grants.append(Grant(spec.request_id, tuple(block_ids)))
        return ApplyResult(tuple(grants), num_released)

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
                record.num_expired_leases += len(record.leases)
                self.num_expired_leases += len(record.leases)
                record.leases.clear()
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


def _describe(geometry: PoolGeometry) -> str:
    return (
        f"{geometry.num_blocks} blocks of {geometry.block_size} tokens, "
        f"{geometry.bytes_per_block} bytes each"
    )
