"""The scheduler's view of the KV store's pools: it consumes `KvStore.WatchCapacity` (one stream,
every worker's pool), keeps the latest stats per worker, exports them as metrics, and reports a
worker whose pool stops being live (its leases expired: the worker stalled or died) so that the
service can take that worker's requests off it before their KV is overwritten.

The stream is re-opened after any error (the store restarting), after `retry_interval_s`. A
store that restarted says so by a new `store_incarnation`: its host tier is empty, which the
service is told (`on_store_restarted`, so the checkpoint book forgets what was there), and the
pools it reports are the ones the workers re-declared (the old incarnation's are forgotten, so a
pool the new store has not heard of yet is not taken for a lost one). The host tier's capacity
is passed on when first seen or changed (`on_host_tier_sized`: the checkpoint book sizes itself
by it, so that a seat is never taken for RT by a checkpoint that would evict another).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.runtime.tls import Tls
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc

logger = logging.getLogger(__name__)


class CapacityWatcher:
    """Latest `PoolStats` by worker id, from the store's capacity stream."""

    def __init__(self, address: str, metrics: ServiceMetrics | None, on_pool_lost: Callable[[str], None],
                 min_interval_ms: int = 100, retry_interval_s: float = 1.0, tls: Tls | None = None,
                 on_store_restarted: Callable[[], None] = lambda: None,
                 on_host_tier_sized: Callable[[int], None] = lambda capacity_bytes: None) -> None:
        self.address = address
        self._tls = tls
        self.pools: dict[str, kvstore_pb2.PoolStats] = {}
        self.num_updates = 0
        self.num_streams = 0  # capacity streams opened (1 + the re-openings)
        self.incarnation = ""  # the store's, as last seen
        self.num_store_restarts = 0
        self._metrics = metrics
        self._on_pool_lost = on_pool_lost
        self._on_store_restarted = on_store_restarted
        self._on_host_tier_sized = on_host_tier_sized
        self.host_tier_capacity_bytes = 0  # as last reported (0: not yet, or an older store)
        self._min_interval_ms = min_interval_ms
        self._retry_interval_s = retry_interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch_forever(), name="kvstore-capacity-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def observe(self, stats: kvstore_pb2.PoolStats) -> None:
        """Records one update; calls `on_pool_lost(worker_id)` when a live pool turns not live,
        `on_store_restarted()` when the store's incarnation changes, and
        `on_host_tier_sized(bytes)` when the host tier's capacity is first seen or changes."""
        if stats.store_incarnation and stats.store_incarnation != self.incarnation:
            restarted = bool(self.incarnation)
            self.incarnation = stats.store_incarnation
            self.pools = {}
            if restarted:
                self.num_store_restarts += 1
                logger.warning("the KV store at %s restarted (incarnation %s): its host tier is empty", self.address,
                               stats.store_incarnation)
                self._on_store_restarted()
        capacity = stats.host_tier_capacity_bytes
        if capacity and capacity != self.host_tier_capacity_bytes:
            self.host_tier_capacity_bytes = capacity
            self._on_host_tier_sized(capacity)
        previous = self.pools.get(stats.worker_id)
        self.pools[stats.worker_id] = stats
        self.num_updates += 1
        if self._metrics is not None:
            worker = stats.worker_id
            for state, value in (("free", stats.num_free), ("real_time", stats.num_real_time),
                                 ("best_effort", stats.num_best_effort), ("reserved", stats.num_reserved)):
                self._metrics.kv_pool_blocks.labels(worker, state).set(value)
            self._metrics.kv_pool_live.labels(worker).set(1 if stats.live else 0)
        if previous is not None and previous.live and not stats.live:
            logger.warning("KV pool of worker %s is no longer live (%d leases expired): its requests move",
                           stats.worker_id, stats.num_expired_leases - previous.num_expired_leases)
            self._on_pool_lost(stats.worker_id)

    async def _watch_forever(self) -> None:
        request = kvstore_pb2.WatchCapacityRequest(min_interval_ms=self._min_interval_ms)
        while True:
            try:
                async with open_channel(self.address, tls=self._tls) as channel:
                    self.num_streams += 1
                    async for stats in kvstore_pb2_grpc.KvStoreStub(channel).WatchCapacity(request):
                        self.observe(stats)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as err:
                logger.info("capacity stream from %s ended (%s): re-opening", self.address, err.code().name)
            await asyncio.sleep(self._retry_interval_s)
