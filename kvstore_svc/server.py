"""The KV store service: the `KvStore` servicer and `start_kvstore` (health, reflection, background tasks).

Handlers are thin: convert, call the core, convert back. Core errors become statuses through
`convert.service_error` and `abort_with`. Handlers that change pool or host-tier usage notify
`changes`, which wakes the WatchCapacity streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from llmserve.runtime import tracing
from llmserve.runtime.errors import LlmServeError, abort_with
from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import ServiceServer, service_full_name, start_server
from llmserve.runtime.tracing import server_interceptors
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc

from kvstore_svc import convert
from kvstore_svc.changes import ChangeSignal
from kvstore_svc.config import KvStoreConfig
from kvstore_svc.core import KvStore, KvStoreError
from kvstore_svc.tasks import expire_forever, publish_metrics_forever

logger = logging.getLogger(__name__)

SERVICE_NAME = service_full_name(kvstore_pb2.DESCRIPTOR, "KvStore")

DEFAULT_WATCH_INTERVAL_MS = 50

Reply = TypeVar("Reply")


def _unary(
    handler: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]:
    """Turns the core's and the converters' errors into the status of a unary handler."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await handler(self, request, context)
        except KvStoreError as err:
            await abort_with(context, convert.service_error(err))
        except LlmServeError as err:
            await abort_with(context, err)
        raise AssertionError("abort_with returned")  # pragma: no cover

    return wrapper


def _trace_leases(request: kvstore_pb2.ApplyRequest) -> None:
    """One `kvstore.lease` span per traced lease, in its request's trace (an Apply serves a whole
    step, so the call's own span belongs to the worker's step trace, not to any request)."""
    for lease in request.leases:
        if lease.trace_context:
            attrs = {**tracing.request_attributes(lease.request_id), tracing.Attr.NUM_BLOCKS: lease.num_blocks,
                     tracing.Attr.WORKER_ID: request.worker_id}
            with tracing.request_span(tracing.SpanNames.LEASE, attrs, context=tracing.extract_context(lease.trace_context)):
                pass


class KvStoreServicer(kvstore_pb2_grpc.KvStoreServicer):
    """Serves one `KvStore` core on the event loop (the core is never touched from another thread)."""

    def __init__(self, store: KvStore, config: KvStoreConfig, changes: ChangeSignal) -> None:
        self._store = store
        self._config = config
        self._changes = changes

    @_unary
    async def RegisterPool(
        self, request: kvstore_pb2.RegisterPoolRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.RegisterPoolResponse:
        worker_id = convert.require_id(request.worker_id, "worker_id")
        self._store.register_pool(worker_id, request.num_blocks, request.block_size, request.bytes_per_block)
        self._changes.notify()
        logger.info(
            "registered pool of %s: %d blocks of %d tokens, %d bytes each",
            worker_id, request.num_blocks, request.block_size, request.bytes_per_block,
        )
        return kvstore_pb2.RegisterPoolResponse(lease_ttl_ms=round(self._store.lease_ttl_s * 1000))

    @_unary
    async def Apply(self, request: kvstore_pb2.ApplyRequest, context: grpc.aio.ServicerContext) -> kvstore_pb2.ApplyResponse:
        worker_id = convert.require_id(request.worker_id, "worker_id")
        result = self._store.apply(worker_id, request.release_request_ids, convert.lease_specs_from_pb(request))
        self._changes.notify()
        _trace_leases(request)
        return convert.apply_response_to_pb(result)

    @_unary
    async def Heartbeat(
        self, request: kvstore_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.HeartbeatResponse:
        result = self._store.heartbeat(request.worker_id)
        return kvstore_pb2.HeartbeatResponse(num_leases=result.num_leases, known=result.known)

    @_unary
    async def GetPoolStats(
        self, request: kvstore_pb2.GetPoolStatsRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.PoolStats:
        worker_id = convert.require_id(request.worker_id, "worker_id")
        return convert.pool_stats_to_pb(self._store.pool_stats(worker_id))

    async def WatchCapacity(
        self, request: kvstore_pb2.WatchCapacityRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kvstore_pb2.PoolStats]:
        """Sends every pool's stats first, then each pool whose stats changed, at most once per interval."""
        interval_s = (request.min_interval_ms or DEFAULT_WATCH_INTERVAL_MS) / 1000
        last_sent: dict[str, object] = {}
        try:
            while True:
                generation = self._changes.generation
                for stats in self._store.all_pool_stats():
                    if last_sent.get(stats.worker_id) != stats:
                        last_sent[stats.worker_id] = stats
                        yield convert.pool_stats_to_pb(stats)
                await asyncio.sleep(interval_s)
                await self._changes.wait_past(generation)
        except asyncio.CancelledError:
            logger.debug("capacity watch ended by the client or a stop")
            raise

    async def Checkpoint(
        self, request_iterator: AsyncIterator[kvstore_pb2.KvChunk], context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.CheckpointResponse:
        writer = self._store.open_checkpoint()
        error: LlmServeError | None = None
        try:
            async for chunk in request_iterator:
                writer.write(convert.chunk_from_pb(chunk))
            # grpc.aio ends the request stream the same way for a client's half-close and for its
            # cancel; a cancel then cancels this task a few loop callbacks later. Yield so that it
            # lands here (and drops the partial checkpoint) rather than after the reply. Best
            # effort: one that slips through leaves an incomplete checkpoint, which is never
            # restored and goes with DropCheckpoint or the request's next checkpoint.
            for _ in range(3):
                await asyncio.sleep(0)
            num_blocks = writer.finish()
        except KvStoreError as err:
            error = convert.service_error(err)
        except asyncio.CancelledError:
            # The sender went away mid-checkpoint: never keep half of it.
            writer.abort()
            self._changes.notify()
            raise
        if error is not None:
            writer.abort()
            self._changes.notify()
            logger.warning("checkpoint of %s refused: %s", writer.request_id or "?", error)
            await abort_with(context, error)
        self._changes.notify()
        return kvstore_pb2.CheckpointResponse(num_blocks=num_blocks, bytes_stored=writer.bytes_stored)

    async def Restore(
        self, request: kvstore_pb2.RestoreRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kvstore_pb2.KvChunk]:
        try:
            request_id = convert.require_id(request.request_id, "request_id")
            data = self._store.restore(request_id, request.dtype, tuple(request.shape))
        except KvStoreError as err:
            await abort_with(context, convert.service_error(err))
            return
        except LlmServeError as err:
            await abort_with(context, err)
            return
        # `data` is an immutable snapshot: a drop or eviction while streaming cannot tear it.
        for chunk in convert.checkpoint_to_pb_chunks(data, self._config.max_chunk_bytes):
            yield chunk

    @_unary
    async def DropCheckpoint(
        self, request: kvstore_pb2.DropCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.DropCheckpointResponse:
        request_id = convert.require_id(request.request_id, "request_id")
        dropped = self._store.drop_checkpoint(request_id)
        if dropped:
            self._changes.notify()
        return kvstore_pb2.DropCheckpointResponse(dropped=dropped)


async def start_kvstore(
    config: KvStoreConfig,
    address: str = "127.0.0.1:0",
    clock: Callable[[], float] = time.monotonic,
    metrics: ServiceMetrics | None = None,
) -> ServiceServer:
    """Serves a fresh, empty KV store on `address` ("host:0" picks a free port).

    Health is SERVING once it returns. A background task calls `expire()` every TTL/4, so a
    worker's leases are gone at most 1.25 TTL after its last call. `stop()` on the result stops
    the server, then the task. `clock` (seconds) is injectable for tests. Pool usage and expired
    leases are published to `metrics` (default: a fresh registry) every second, served on
    `config.metrics_port` when it is not 0.
    """
    metrics = metrics or ServiceMetrics.create("kvstore")
    store = KvStore(config.lease_ttl_s, config.host_tier_bytes, clock)
    changes = ChangeSignal()
    servicer = KvStoreServicer(store, config, changes)
    running = await start_server(
        lambda server: kvstore_pb2_grpc.add_KvStoreServicer_to_server(servicer, server),
        [SERVICE_NAME],
        address,
        interceptors=server_interceptors(),
    )
    expiry = asyncio.create_task(expire_forever(store, changes, config.lease_ttl_s / 4), name="kvstore-expiry")
    publish = asyncio.create_task(publish_metrics_forever(store, metrics, 1.0), name="kvstore-metrics")

    async def stop_tasks() -> None:
        for task in (expiry, publish):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    running.cleanups.append(stop_tasks)
    metrics_server = start_metrics_server(config.metrics_port, metrics.registry)
    if metrics_server is not None:
        running.cleanups.append(lambda: asyncio.to_thread(metrics_server.close))
    await running.set_serving(True)
    logger.info(
        "kvstore serving on port %d (lease TTL %.1f s, host tier %.2f GiB)",
        running.port, config.lease_ttl_s, config.host_tier_bytes / 2**30,
    )
    return running
