"""Starts the KV store service: the `KvStore` servicer, health, reflection and the expiry task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import ServiceServer, service_full_name, start_server
from llmserve.runtime.tracing import server_interceptors
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc

from kvstore_svc.changes import ChangeSignal
from kvstore_svc.config import KvStoreConfig
from kvstore_svc.core import KvStore
from kvstore_svc.servicer import KvStoreServicer

logger = logging.getLogger(__name__)

SERVICE_NAME = service_full_name(kvstore_pb2.DESCRIPTOR, "KvStore")


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
    expiry = asyncio.create_task(_expire_forever(store, changes, config.lease_ttl_s / 4), name="kvstore-expiry")
    publish = asyncio.create_task(_publish_metrics_forever(store, metrics, 1.0), name="kvstore-metrics")

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


async def _expire_forever(store: KvStore, changes: ChangeSignal, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        before = store.leases.num_expired_leases
        expired = store.expire()
        if expired:
            changes.notify()
            logger.warning(
                "workers %s missed heartbeats for %.1f s: %d leases expired",
                ", ".join(expired), store.lease_ttl_s, store.leases.num_expired_leases - before,
            )


async def _publish_metrics_forever(store: KvStore, metrics: ServiceMetrics, period_s: float) -> None:
    """Copies pool usage into the gauges on the event loop (the core is never read from the
    metrics server's thread)."""
    expired_seen: dict[str, int] = {}
    while True:
        for stats in store.all_pool_stats():
            # Deadline leases come from the high end with best-effort ones: the pool counts them together.
            metrics.set_kv_blocks(stats.worker_id, {"real_time": stats.num_real_time, "best_effort": stats.num_best_effort}, stats.num_blocks)
            new_expired = stats.num_expired_leases - expired_seen.get(stats.worker_id, 0)
            if new_expired > 0:
                metrics.expired_leases_total.labels(stats.worker_id).inc(new_expired)
            expired_seen[stats.worker_id] = stats.num_expired_leases
        await asyncio.sleep(period_s)
