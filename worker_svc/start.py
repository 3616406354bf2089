"""Assembles a worker process: its torch thread, model and step runner, its leases with the KV
store, its checkpoint sender, the gRPC server around `WorkerServicer` and its /metrics."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from llmserve.plan_book import CachingLeaseKeeper
from llmserve.runtime import tracing
from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import ServiceServer, start_server
from llmserve.v1 import worker_pb2_grpc

from worker_svc import convert
from worker_svc.build import build_runner, reserve_blocks
from worker_svc.checkpoint_client import KvCheckpointClient
from worker_svc.config import WorkerConfig
from worker_svc.forward_thread import ForwardThread
from worker_svc.kv_client import KvLeaseClient
from worker_svc.server import WorkerServicer
from worker_svc.start_phases import StartPhases, process_age_s

logger = logging.getLogger(__name__)


async def start_worker(config: WorkerConfig, address: str = "127.0.0.1:0",
                       metrics: ServiceMetrics | None = None) -> ServiceServer:
    """Loads the model and sizes the KV cache (on the forward thread, which then runs every step),
    registers the pool with the KV store (waiting up to `config.kvstore_connect_timeout_s` for it),
    starts heart-beating every TTL/3 and serves on `address`. Health is SERVING once it returns;
    `stop()` stops serving, then the heartbeat, the store channel and the forward thread. Logs how
    long each phase of the start took (`start_phases.py`)."""
    phases = StartPhases(before_s=process_age_s())
    tls = config.load_tls()
    forward_thread = ForwardThread()
    try:
        server = await _start(config, address, metrics, tls, forward_thread, phases)
    except BaseException:
        forward_thread.close()
        raise

    async def close_forward_thread() -> None:
        forward_thread.close()

    server.cleanups.append(close_forward_thread)
    return server


async def _start(config: WorkerConfig, address: str, metrics: ServiceMetrics | None, tls: Any,
                 forward_thread: ForwardThread, phases: StartPhases) -> ServiceServer:
    runner, description = await forward_thread.run(lambda: build_runner(config, phases))
    prefix = runner.book.prefix
    assert prefix is not None, "the runner's plan book has its prefix cache"
    keeper = CachingLeaseKeeper(description.num_blocks, reserve_blocks(config, description), config.kv_sync_interval_s,
                                prefix=prefix)
    kv = KvLeaseClient(config.kvstore_addr, description, keeper, tls=tls)
    try:
        ttl_s = await kv.register(config.kvstore_connect_timeout_s)
    except grpc.aio.AioRpcError as err:
        await kv.close()
        raise RuntimeError(f"could not register the KV pool with the store at {config.kvstore_addr}: "
                           f"{err.code().name} {err.details()}") from err
    phases.mark("KV pool registration")
    kv.start_heartbeat()
    checkpoints = KvCheckpointClient(config.kvstore_addr, tls=tls)
    checkpoints.start()
    metrics = metrics or ServiceMetrics.create("worker")
    metrics.kv_blocks_total.labels(description.worker_id).set(description.num_blocks)
    servicer = WorkerServicer(runner, description, kv, metrics, checkpoints,
                              forward_thread=forward_thread if config.forward_in_thread else None)
    try:
        server = await start_server(lambda s: worker_pb2_grpc.add_WorkerServicer_to_server(servicer, s), [convert.SERVICE_NAME],
                                    address, interceptors=tracing.server_interceptors(), tls=tls)
    except Exception:
        await checkpoints.close()
        await kv.close()
        raise
    server.service = servicer
    server.cleanups.append(checkpoints.close)
    server.cleanups.append(kv.close)
    metrics_server = start_metrics_server(config.metrics_port, metrics.registry)
    if metrics_server is not None:
        async def close_metrics() -> None:
            metrics_server.close()

        server.cleanups.append(close_metrics)
    await server.set_serving(True)
    phases.mark("server start")
    logger.info("worker %s serving on %s (KV store %s, lease TTL %.1fs, %d blocks held ahead at each end) after %s",
                description.worker_id, server.address, config.kvstore_addr, ttl_s, keeper.reserve_blocks,
                phases.describe())
    return server
