"""`KvStore`: the lease table and the host tier behind one clock, as the service uses them.

It adds what the RPCs need on top of the parts: the time (an injected `clock`), per-pool stats,
a metrics snapshot, and checkpoint writes grouped into calls (`CheckpointWriter`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from llmserve.plan import LeaseSync, PoolDeclaration, SyncReply

from kvstore_svc.core.errors import InvalidSpecError
from kvstore_svc.core.host_tier import CheckpointData, HostTier, KvChunk
from kvstore_svc.core.lease_table import ApplyResult, HeartbeatResult, LeaseSpec, LeaseTable
from kvstore_svc.core.worker_pool import WorkerPool


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Usage of one worker's pool (and of the shared host tier)."""

    worker_id: str
    num_blocks: int
    num_free: int
    num_real_time: int  # blocks leased to real-time requests (they grow from the low end)
    num_best_effort: int  # blocks leased to best-effort and deadline requests (from the high end)
    num_leases: int  # requests holding leases
    num_expired_leases: int  # since start
    num_checkpoints: int  # host tier, all workers
    host_tier_bytes: int  # host tier, all workers
    live: bool  # False once its leases expired, until it registers again
    num_reserved: int = 0  # held by the worker ahead of need, no request's yet
    store_incarnation: str = ""  # the store process's id (a change: it restarted, its tier is empty)
    host_tier_capacity_bytes: int = 0  # host tier, all workers


@dataclass(frozen=True, slots=True)
class KvStoreMetrics:
    """Every counter and gauge of the store, as plain numbers for an exporter."""

    num_pools: int
    num_live_pools: int
    blocks_total: int
    blocks_free: int
    blocks_real_time: int
    blocks_best_effort: int
    blocks_reserved: int  # held by workers ahead of need
    num_leases: int
    expired_leases_total: int
    refused_releases_total: int
    dropped_on_register_total: int
    refused_applies_total: int
    syncs_total: int
    declared_pools_total: int  # pools rebuilt from a worker's declaration (after a store restart)
    num_checkpoints: int
    host_tier_bytes: int
    host_tier_capacity_bytes: int
    checkpoints_total: int
    checkpoint_bytes_total: int  # stored into the tier
    restored_bytes_total: int  # handed out by restores
    restores_total: int
    evictions_total: int
    checkpoint_refusals_total: int


class KvStore:
    """Pools, leases and the host tier. Not thread-safe: one caller (the event loop) at a time."""

    def __init__(self, lease_ttl_s: float, host_tier_bytes: int, clock: Callable[[], float],
                 incarnation: str = "") -> None:
        """`incarnation`: this store's id, new each time the process starts (the shell draws it)."""
        self.leases = LeaseTable(lease_ttl_s)
        self.host_tier = HostTier(host_tier_bytes)
        self.incarnation = incarnation
        self._clock = clock

    @property
    def lease_ttl_s(self) -> float:
        return self.leases.ttl_s

    def register_pool(self, worker_id: str, num_blocks: int, block_size: int, bytes_per_block: int,
                      declaration: PoolDeclaration | None = None) -> None:
        """See `LeaseTable.register_pool`."""
        self.leases.register_pool(worker_id, num_blocks, block_size, bytes_per_block, self._clock(), declaration)

    def apply(self, worker_id: str, release_request_ids: Iterable[str], lease_specs: Sequence[LeaseSpec]) -> ApplyResult:
        """See `LeaseTable.apply`."""
        return self.leases.apply(worker_id, release_request_ids, lease_specs, self._clock())

    def sync(self, worker_id: str, sync: LeaseSync) -> SyncReply:
        """See `LeaseTable.sync`."""
        return self.leases.sync(worker_id, sync, self._clock())

    def heartbeat(self, worker_id: str) -> HeartbeatResult:
        """See `LeaseTable.heartbeat`."""
        return self.leases.heartbeat(worker_id, self._clock())

    def expire(self) -> list[str]:
        """See `LeaseTable.expire`."""
        return self.leases.expire(self._clock())

    def pool_stats(self, worker_id: str) -> PoolStats:
        """Stats of one pool; `UnknownWorkerError` if it never registered."""
        return self._stats(self.leases.worker(worker_id))

    def all_pool_stats(self) -> list[PoolStats]:
        """Stats of every pool that ever registered, in registration order."""
        return [self._stats(self.leases.worker(worker_id)) for worker_id in self.leases.worker_ids()]

    def open_checkpoint(self) -> CheckpointWriter:
        """A writer for the chunks of one Checkpoint call."""
        return CheckpointWriter(self.host_tier)

    def restore(self, request_id: str, expected_dtype: str = "", expected_shape: tuple[int, ...] = (),
                first_block: int = 0) -> CheckpointData:
        """See `HostTier.restore`."""
        return self.host_tier.restore(request_id, expected_dtype, expected_shape, first_block)

    def drop_checkpoint(self, request_id: str) -> bool:
        """See `HostTier.drop`."""
        return self.host_tier.drop(request_id)

    def metrics(self) -> KvStoreMetrics:
        """A snapshot of every counter and gauge."""
        records = [self.leases.worker(w) for w in self.leases.worker_ids()]
        live = [r for r in records if r.live]
        tier = self.host_tier
        return KvStoreMetrics(
            num_pools=len(records),
            num_live_pools=len(live),
            blocks_total=sum(r.pool.num_blocks for r in live),
            blocks_free=sum(r.pool.num_free for r in live),
            blocks_real_time=sum(r.leased_blocks()[0] for r in live),
            blocks_best_effort=sum(r.leased_blocks()[1] for r in live),
            blocks_reserved=sum(len(r.reserve) for r in live),
            num_leases=sum(len(r.leases) for r in live),
            expired_leases_total=self.leases.num_expired_leases,
            refused_releases_total=self.leases.num_refused_releases,
            dropped_on_register_total=self.leases.num_dropped_on_register,
            refused_applies_total=self.leases.num_refused_applies,
            syncs_total=self.leases.num_syncs,
            declared_pools_total=self.leases.num_declared_pools,
            num_checkpoints=tier.num_checkpoints,
            host_tier_bytes=tier.bytes_used,
            host_tier_capacity_bytes=tier.capacity_bytes,
            checkpoints_total=tier.num_checkpoints_total,
            checkpoint_bytes_total=tier.bytes_stored_total,
            restored_bytes_total=tier.bytes_restored_total,
            restores_total=tier.num_restores,
            evictions_total=tier.num_evictions,
            checkpoint_refusals_total=tier.num_refusals,
        )

    def _stats(self, record: WorkerPool) -> PoolStats:
        real_time, best_effort = record.leased_blocks()
        return PoolStats(
            worker_id=record.worker_id,
            num_blocks=record.pool.num_blocks,
            num_free=record.pool.num_free,
            num_real_time=real_time,
            num_best_effort=best_effort,
            num_leases=len(record.leases),
            num_expired_leases=record.num_expired_leases,
            num_checkpoints=self.host_tier.num_checkpoints,
            host_tier_bytes=self.host_tier.bytes_used,
            live=record.live,
            num_reserved=len(record.reserve),
            store_incarnation=self.incarnation,
            host_tier_capacity_bytes=self.host_tier.capacity_bytes,
        )


class CheckpointWriter:
    """The chunks of one Checkpoint call: all for one request; a failed call drops its checkpoint.

    Call `write` per chunk, then `finish()` (the request's block count) or `abort()` when the
    call failed or was cancelled, so that no half-written checkpoint is ever restored.
    """

    __slots__ = ("_tier", "request_id", "bytes_stored")

    def __init__(self, tier: HostTier) -> None:
        self._tier = tier
        self.request_id = ""
        self.bytes_stored = 0

    def write(self, chunk: KvChunk) -> None:
        """Stores a chunk. Errors as `HostTier.write`, and `InvalidSpecError` for a second request."""
        if not self.request_id:
            self.request_id = chunk.request_id
        elif chunk.request_id != self.request_id:
            raise InvalidSpecError(
                f"one Checkpoint call carries one request: got {chunk.request_id} after {self.request_id}"
            )
        self.bytes_stored += self._tier.write(chunk)

    def finish(self) -> int:
        """Blocks now held for the request. `InvalidSpecError` when the call carried no chunk."""
        if not self.request_id:
            raise InvalidSpecError("the Checkpoint stream carried no chunk")
        return self._tier.num_blocks(self.request_id)

    def abort(self) -> None:
        """Drops the request's checkpoint (all of it, earlier calls' blocks included)."""
        if self.request_id:
            self._tier.drop(self.request_id)
