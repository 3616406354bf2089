"""One worker's record in the lease table: its pool, the leases of its requests, its reserve.

Every block of a pool is in exactly one place: free, in the worker's reserve (held ahead of need,
no request's yet), or in one request's lease. `LeaseTable` keeps one `WorkerPool` per worker and
changes it only through its checked calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmserve.plan import SyncReply

from kvstore_svc.core.block_pool import BlockPool
from kvstore_svc.core.classes import PoolEnd, ServiceClass
from kvstore_svc.core.errors import InvalidSpecError


@dataclass(frozen=True, slots=True)
class PoolGeometry:
    """The shape of a worker's KV pool."""

    num_blocks: int
    block_size: int  # tokens per block
    bytes_per_block: int  # one block across layers, K and V

    def describe(self) -> str:
        return f"{self.num_blocks} blocks of {self.block_size} tokens, {self.bytes_per_block} bytes each"


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
    # Blocks the worker holds ahead of need (no request's yet), by the end they were taken from.
    reserve: dict[int, PoolEnd] = field(default_factory=dict)
    sequence: int = 0  # the last sync applied (0: none since registration)
    last_sync: SyncReply | None = None  # its reply, answered again to a retry

    def leased_blocks(self) -> tuple[int, int]:
        """Blocks leased to real-time requests, and to the others (deadline and best-effort)."""
        real_time = others = 0
        for lease in self.leases.values():
            if lease.service_class is ServiceClass.REAL_TIME:
                real_time += len(lease.block_ids)
            else:
                others += len(lease.block_ids)
        return real_time, others

    def add_to_lease(self, request_id: str, service_class: ServiceClass, block_ids: Sequence[int]) -> None:
        """Appends blocks to a request's lease, creating it on its first blocks."""
        lease = self.leases.get(request_id)
        if lease is None:
            lease = Lease(self.worker_id, request_id, service_class, [])
            self.leases[request_id] = lease
        lease.block_ids.extend(block_ids)

    def check_class(self, request_id: str, service_class: ServiceClass, released: set[str], where: str) -> None:
        """A request's lease keeps its class (unless this call releases it first)."""
        held = self.leases.get(request_id)
        if held is not None and request_id not in released and held.service_class is not service_class:
            raise InvalidSpecError(
                f"{where}: request {request_id} holds {held.service_class.label} blocks, "
                f"cannot add {service_class.label} ones"
            )
