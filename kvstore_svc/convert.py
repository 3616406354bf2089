"""The one place where protobuf messages meet the KV store's domain types and errors."""

from __future__ import annotations

from collections.abc import Iterator

from llmserve.runtime.errors import CapacityError, ConflictError, InvalidRequestError, LlmServeError, NotFoundError
from llmserve.types import service_class_of
from llmserve.v1 import kvstore_pb2

from kvstore_svc.core import (
    ApplyResult,
    CheckpointData,
    GeometryConflictError,
    HostTierFullError,
    InvalidSpecError,
    KvChunk,
    KvStoreError,
    LeaseSpec,
    OutOfBlocksError,
    PoolStats,
    UnknownCheckpointError,
    UnknownWorkerError,
)

# Core error class -> the shared error class whose status code it gets.
_SERVICE_ERROR_OF: tuple[tuple[type[KvStoreError], type[LlmServeError]], ...] = (
    (InvalidSpecError, InvalidRequestError),
    (UnknownWorkerError, NotFoundError),
    (UnknownCheckpointError, NotFoundError),
    (GeometryConflictError, ConflictError),
    (OutOfBlocksError, CapacityError),
    (HostTierFullError, CapacityError),
)


def service_error(error: KvStoreError) -> LlmServeError:
    """The shared domain error (and so the gRPC status) of a core error; the message is kept."""
    for core_cls, service_cls in _SERVICE_ERROR_OF:
        if isinstance(error, core_cls):
            return service_cls(str(error))
    return LlmServeError(str(error))


def require_id(value: str, field: str) -> str:
    """`value`, or InvalidRequestError naming the empty field."""
    if not value:
        raise InvalidRequestError(f"{field} is empty")
    return value


def lease_specs_from_pb(request: kvstore_pb2.ApplyRequest) -> list[LeaseSpec]:
    """The lease specs of an Apply; InvalidRequestError for an unset or unknown service class."""
    specs = []
    for index, spec in enumerate(request.leases):
        service_class = service_class_of(spec.service_class)
        if service_class is None:
            raise InvalidRequestError(
                f"leases[{index}].service_class is {spec.service_class}: set SERVICE_CLASS_REAL_TIME, "
                "SERVICE_CLASS_DEADLINE or SERVICE_CLASS_BEST_EFFORT"
            )
        specs.append(LeaseSpec(spec.request_id, service_class, spec.num_blocks))
    return specs


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
    last_block = len(data.blocks) - 1
    for index, block in enumerate(data.blocks):
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
