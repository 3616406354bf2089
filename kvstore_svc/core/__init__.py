"""The pure, synchronous KV store: two-ended block pools, leases with expiry, the host tier.

No grpc, asyncio or protobuf here; time comes from an injected clock (seconds). The scheduler's
simulator uses `BlockPool` (and may use `KvStore`) directly.
"""

from __future__ import annotations

from kvstore_svc.core.block_pool import BlockPool
from kvstore_svc.core.classes import PoolEnd, ServiceClass, pool_end
from kvstore_svc.core.errors import (
    CheckpointMismatchError,
    GeometryConflictError,
    HostTierFullError,
    InvalidSpecError,
    KvStoreError,
    OutOfBlocksError,
    PoolLiveError,
    SyncOrderError,
    UnknownCheckpointError,
    UnknownWorkerError,
)
from kvstore_svc.core.host_tier import CheckpointData, HostTier, KvChunk
from kvstore_svc.core.lease_table import ApplyResult, Grant, HeartbeatResult, LeaseSpec, LeaseTable
from kvstore_svc.core.worker_pool import Lease, PoolGeometry
from kvstore_svc.core.store import CheckpointWriter, KvStore, KvStoreMetrics, PoolStats

__all__ = [
    "ApplyResult",
    "BlockPool",
    "CheckpointData",
    "CheckpointMismatchError",
    "CheckpointWriter",
    "GeometryConflictError",
    "Grant",
    "HeartbeatResult",
    "HostTier",
    "HostTierFullError",
    "InvalidSpecError",
    "KvChunk",
    "KvStore",
    "KvStoreError",
    "KvStoreMetrics",
    "Lease",
    "LeaseSpec",
    "LeaseTable",
    "OutOfBlocksError",
    "PoolEnd",
    "PoolGeometry",
    "PoolLiveError",
    "PoolStats",
    "ServiceClass",
    "SyncOrderError",
    "UnknownCheckpointError",
    "UnknownWorkerError",
    "pool_end",
]
