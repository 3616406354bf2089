"""The one place where protobuf messages meet the KV store's domain types: the servicer hands every
message it receives here and sends only messages built here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from llmserve.errors import InvalidRequestError
from llmserve.plan import Holding, LeaseSync, PoolDeclaration, SyncReply
from llmserve.types import ServiceClass, service_class_of
from llmserve.v1 import kvstore_pb2

from kvstore_svc.core import (
    ApplyResult,
    CheckpointData,
    HeartbeatResult,
    KvChunk,
    LeaseSpec,
    PoolGeometry,
    PoolStats,
)

# The full name of the service, for health and reflection.
SERVICE_NAME = kvstore_pb2.DESCRIPTOR.services_by_name["KvStore"].full_name


def require_id(value: str, field: str) -> str:
    """`value`, or InvalidRequestError naming the empty field."""
    if not value:
        raise InvalidRequestError(f"{field} is empty")
    return value


def _service_class(value: int, where: str) -> ServiceClass:
    service_class = service_class_of(value)
    if service_class is None:
        raise InvalidRequestError(
            f"{where}.service_class is {value}: set SERVICE_CLASS_REAL_TIME, SERVICE_CLASS_DEADLINE or "
            "SERVICE_CLASS_BEST_EFFORT"
        )
    return service_class


def lease_specs_from_pb(request: kvstore_pb2.ApplyRequest) -> list[LeaseSpec]:
    """The lease specs of an Apply; InvalidRequestError for an unset or unknown service class."""
    return [LeaseSpec(spec.request_id, _service_class(spec.service_class, f"leases[{index}]"), spec.num_blocks)
            for index, spec in enumerate(request.leases)]


def _holdings_from_pb(holdings: Iterable[kvstore_pb2.Holding], field: str) -> tuple[Holding, ...]:
    return tuple(Holding(h.request_id, _service_class(h.service_class, f"{field}[{index}]"), tuple(h.block_ids))
                 for index, h in enumerate(holdings))


def declaration_from_pb(request: kvstore_pb2.RegisterPoolRequest) -> PoolDeclaration:
    """What a re-registering worker declares it holds (empty for a fresh pool)."""
    return PoolDeclaration(_holdings_from_pb(request.held, "held"), tuple(request.reserved_low_block_ids),
                           tuple(request.reserved_high_block_ids))


def sync_from_pb(request: kvstore_pb2.SyncRequest) -> tuple[str, LeaseSync]:
    """The worker id (InvalidRequestError when empty) and its batch of lease changes."""
    return require_id(request.worker_id, "worker_id"), LeaseSync(
        sequence=request.sequence,
        release_request_ids=tuple(request.release_request_ids),
        assignments=_holdings_from_pb(request.assignments, "assignments"),
        unreserve_block_ids=tuple(request.unreserve_block_ids),
        reserve_low=request.reserve_low,
        reserve_high=request.reserve_high,
    )


def sync_traces_from_pb(request: kvstore_pb2.SyncRequest) -> list[tuple[str, int, dict[str, str]]]:
    """(request id, blocks assigned, W3C carrier) of each assignment that carries its request's trace context."""
    return [(a.request_id, len(a.block_ids), dict(a.trace_context)) for a in request.assignments if a.trace_context]


def sync_response_to_pb(reply: SyncReply) -> kvstore_pb2.SyncResponse:
    return kvstore_pb2.SyncResponse(sequence=reply.sequence, reserved_low_block_ids=reply.reserved_low,
                                    reserved_high_block_ids=reply.reserved_high, num_released=reply.num_released)


def apply_response_to_pb(result: ApplyResult) -> kvstore_pb2.ApplyResponse:
    return kvstore_pb2.ApplyResponse(
        grants=[kvstore_pb2.Grant(request_id=g.request_id, block_ids=g.block_ids) for g in result.grants],
        num_released=result.num_released,
    )


def pool_stats_to_pb(stats: PoolStats) -> kvstore_pb2.PoolStats:
    return kvstore_pb2.PoolStats(
        worker_id=stats.worker_id,
        num_blocks=stats.num_blocks,
        num_free=stats.num_free,
        num_real_time=stats.num_real_time,
        num_best_effort=stats.num_best_effort,
        num_leases=stats.num_leases,
        num_expired_leases=stats.num_expired_leases,
        num_checkpoints=stats.num_checkpoints,
        host_tier_bytes=stats.host_tier_bytes,
        live=stats.live,
        num_reserved=stats.num_reserved,
        store_incarnation=stats.store_incarnation,
        host_tier_capacity_bytes=stats.host_tier_capacity_bytes,
    )


def chunk_from_pb(chunk: kvstore_pb2.KvChunk) -> KvChunk:
    return KvChunk(
        request_id=chunk.request_id,
        block_index=chunk.block_index,
        data=chunk.data,
        offset=chunk.offset,
        block_bytes=chunk.block_bytes,
        dtype=chunk.dtype,
        shape=tuple(chunk.shape),
        num_tokens=chunk.num_tokens,
        final=chunk.final,
    )


def checkpoint_to_pb_chunks(data: CheckpointData, max_chunk_bytes: int) -> Iterator[kvstore_pb2.KvChunk]:
    """The checkpoint as chunks of at most `max_chunk_bytes` of data, block by block in order;
    the last chunk sets `final` and `num_tokens`."""
    last_block = data.first_block + len(data.blocks) - 1
    for index, block in enumerate(data.blocks, start=data.first_block):
        view = memoryview(block)
        for offset in range(0, data.block_bytes, max_chunk_bytes):
            end = min(offset + max_chunk_bytes, data.block_bytes)
            final = index == last_block and end == data.block_bytes
            yield kvstore_pb2.KvChunk(
                request_id=data.request_id,
                block_index=index,
                data=bytes(view[offset:end]),
                offset=offset,
                block_bytes=data.block_bytes,
                dtype=data.dtype,
                shape=data.shape,
                num_tokens=data.num_tokens if final else 0,
                final=final,
            )


def register_pool_from_pb(request: kvstore_pb2.RegisterPoolRequest) -> tuple[str, PoolGeometry]:
    """The worker id (InvalidRequestError when empty) and the pool geometry it registers."""
    worker_id = require_id(request.worker_id, "worker_id")
    return worker_id, PoolGeometry(request.num_blocks, request.block_size, request.bytes_per_block)


def register_pool_response_to_pb(lease_ttl_s: float, incarnation: str) -> kvstore_pb2.RegisterPoolResponse:
    return kvstore_pb2.RegisterPoolResponse(lease_ttl_ms=round(lease_ttl_s * 1000), store_incarnation=incarnation)


def apply_from_pb(request: kvstore_pb2.ApplyRequest) -> tuple[str, list[str], list[LeaseSpec]]:
    """The worker id (InvalidRequestError when empty), the request ids to release, the lease specs."""
    return require_id(request.worker_id, "worker_id"), list(request.release_request_ids), lease_specs_from_pb(request)


def lease_traces_from_pb(request: kvstore_pb2.ApplyRequest) -> list[tuple[str, int, dict[str, str]]]:
    """(request id, blocks asked, W3C carrier) of each lease that carries its request's trace context."""
    return [(lease.request_id, lease.num_blocks, dict(lease.trace_context)) for lease in request.leases if lease.trace_context]


def worker_id_from_pb(request: kvstore_pb2.HeartbeatRequest | kvstore_pb2.GetPoolStatsRequest) -> str:
    """The named worker; empty stays empty (the core reports an unknown worker)."""
    return request.worker_id


def heartbeat_response_to_pb(result: HeartbeatResult) -> kvstore_pb2.HeartbeatResponse:
    return kvstore_pb2.HeartbeatResponse(num_leases=result.num_leases, known=result.known)


def watch_interval_s_from_pb(request: kvstore_pb2.WatchCapacityRequest, default_ms: int) -> float:
    """The least time between two updates of one pool, in seconds (`default_ms` when unset)."""
    return (request.min_interval_ms or default_ms) / 1000


def checkpoint_response_to_pb(num_blocks: int, bytes_stored: int) -> kvstore_pb2.CheckpointResponse:
    return kvstore_pb2.CheckpointResponse(num_blocks=num_blocks, bytes_stored=bytes_stored)


def restore_from_pb(request: kvstore_pb2.RestoreRequest) -> tuple[str, str, tuple[int, ...], int]:
    """The request id (InvalidRequestError when empty), the dtype and shape the restorer expects,
    and the first block it wants."""
    return (require_id(request.request_id, "request_id"), request.dtype, tuple(request.shape),
            request.first_block_index)


def drop_checkpoint_from_pb(request: kvstore_pb2.DropCheckpointRequest) -> str:
    """The request id (InvalidRequestError when empty)."""
    return require_id(request.request_id, "request_id")


def drop_checkpoint_response_to_pb(dropped: bool) -> kvstore_pb2.DropCheckpointResponse:
    return kvstore_pb2.DropCheckpointResponse(dropped=dropped)
