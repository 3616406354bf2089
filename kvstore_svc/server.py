"""The KV store service: the `KvStore` servicer and `start_kvstore` (health, reflection, background tasks).

Handlers are thin: `convert` reads the request, the core acts, `convert` builds the reply. Errors
just propagate: the server's error interceptor ends the call with the status of the one table
(`llmserve.runtime.errors`), which the core's errors subclass. Handlers that change pool or
host-tier usage notify `changes`, which wakes the WatchCapacity streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from llmserve.runtime import tracing
from llmserve.runtime.errors import LlmServeError
from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import ServiceServer, start_server
from llmserve.runtime.tracing import server_interceptors
from llmserve.v1 import kvstore_pb2_grpc

from kvstore_svc import convert
from kvstore_svc.changes import ChangeSignal
from kvstore_svc.config import KvStoreConfig
from kvstore_svc.core import KvStore
from kvstore_svc.tasks import expire_forever, publish_metrics_forever

if TYPE_CHECKING:
    from llmserve.v1 import kvstore_pb2

logger = logging.getLogger(__name__)

DEFAULT_WATCH_INTERVAL_MS = 50


def _trace_leases(worker_id: str, traced: list[tuple[str, int, dict[str, str]]]) -> None:
    """One `kvstore.lease` span per traced lease, in its request's trace (an Apply or a Sync serves
    many requests, so the call's own span belongs to the worker's trace, not to any request)."""
    for request_id, num_blocks, carrier in traced:
        attrs = {**tracing.request_attributes(request_id), tracing.Attr.NUM_BLOCKS: num_blocks,
                 tracing.Attr.WORKER_ID: worker_id}
        with tracing.request_span(tracing.SpanNames.LEASE, attrs, context=tracing.extract_context(carrier)):
            pass


class KvStoreServicer(kvstore_pb2_grpc.KvStoreServicer):
    """Serves one `KvStore` core on the event loop (the core is never touched from another thread)."""

    def __init__(self, store: KvStore, config: KvStoreConfig, changes: ChangeSignal) -> None:
        self._store = store
        self._config = config
        self._changes = changes

    async def RegisterPool(
        self, request: kvstore_pb2.RegisterPoolRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.RegisterPoolResponse:
        worker_id, geometry = convert.register_pool_from_pb(request)
        declaration = convert.declaration_from_pb(request)
        self._store.register_pool(worker_id, geometry.num_blocks, geometry.block_size, geometry.bytes_per_block,
                                  declaration)
        self._changes.notify()
        if declaration.empty:
            logger.info("registered pool of %s: %d blocks of %d tokens, %d bytes each",
                        worker_id, geometry.num_blocks, geometry.block_size, geometry.bytes_per_block)
        else:
            logger.warning("rebuilt pool of %s from its declaration: %d requests hold %d blocks, %d reserved",
                           worker_id, len(declaration.held), sum(len(h.block_ids) for h in declaration.held),
                           len(declaration.reserved_low) + len(declaration.reserved_high))
        return convert.register_pool_response_to_pb(self._store.lease_ttl_s, self._store.incarnation)

    async def Apply(self, request: kvstore_pb2.ApplyRequest, context: grpc.aio.ServicerContext) -> kvstore_pb2.ApplyResponse:
        worker_id, release_request_ids, lease_specs = convert.apply_from_pb(request)
        result = self._store.apply(worker_id, release_request_ids, lease_specs)
        self._changes.notify()
        _trace_leases(worker_id, convert.lease_traces_from_pb(request))
        return convert.apply_response_to_pb(result)

    async def Sync(
        self, request: kvstore_pb2.SyncRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.SyncResponse:
        worker_id, sync = convert.sync_from_pb(request)
        reply = self._store.sync(worker_id, sync)
        self._changes.notify()
        _trace_leases(worker_id, convert.sync_traces_from_pb(request))
        return convert.sync_response_to_pb(reply)

    async def Heartbeat(
        self, request: kvstore_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.HeartbeatResponse:
        return convert.heartbeat_response_to_pb(self._store.heartbeat(convert.worker_id_from_pb(request)))

    async def GetPoolStats(
        self, request: kvstore_pb2.GetPoolStatsRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.PoolStats:
        worker_id = convert.require_id(convert.worker_id_from_pb(request), "worker_id")
        return convert.pool_stats_to_pb(self._store.pool_stats(worker_id))

    async def WatchCapacity(
        self, request: kvstore_pb2.WatchCapacityRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kvstore_pb2.PoolStats]:
        """Sends every pool's stats first, then each pool whose stats changed, at most once per interval."""
        interval_s = convert.watch_interval_s_from_pb(request, DEFAULT_WATCH_INTERVAL_MS)
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
        except BaseException as err:
            # Refused, the sender gone mid-checkpoint, or a bug: never keep half of it. The
            # error's status reaches the sender (a refusal's own; INTERNAL for a bug).
            writer.abort()
            self._changes.notify()
            if isinstance(err, LlmServeError):
                logger.warning("checkpoint of %s refused: %s", writer.request_id or "?", err)
            raise
        self._changes.notify()
        return convert.checkpoint_response_to_pb(num_blocks, writer.bytes_stored)

    async def Restore(
        self, request: kvstore_pb2.RestoreRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kvstore_pb2.KvChunk]:
        request_id, dtype, shape, first_block = convert.restore_from_pb(request)
        data = self._store.restore(request_id, dtype, shape, first_block)
        # `data` is an immutable snapshot: a drop or eviction while streaming cannot tear it.
        for chunk in convert.checkpoint_to_pb_chunks(data, self._config.max_chunk_bytes):
            yield chunk

    async def DropCheckpoint(
        self, request: kvstore_pb2.DropCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> kvstore_pb2.DropCheckpointResponse:
        dropped = self._store.drop_checkpoint(convert.drop_checkpoint_from_pb(request))
        if dropped:
            self._changes.notify()
        return convert.drop_checkpoint_response_to_pb(dropped)


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
    # A new incarnation each start: workers and the scheduler tell by it that the pools and the
    # host tier they knew are gone.
    store = KvStore(config.lease_ttl_s, config.host_tier_bytes, clock, incarnation=uuid.uuid4().hex)
    changes = ChangeSignal()
    servicer = KvStoreServicer(store, config, changes)
    running = await start_server(
        lambda server: kvstore_pb2_grpc.add_KvStoreServicer_to_server(servicer, server),
        [convert.SERVICE_NAME],
        address,
        interceptors=server_interceptors(),
        tls=config.load_tls(),
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
        "kvstore serving on port %d (lease TTL %.1f s, host tier %.2f GiB, incarnation %s)",
        running.port, config.lease_ttl_s, config.host_tier_bytes / 2**30, store.incarnation,
    )
    return running
