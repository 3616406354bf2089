"""The model-server gauges of the Kubernetes inference gateway's endpoint picker, on the gateway's
/metrics, under vLLM's names so that the picker needs no configuration:

    vllm:num_requests_waiting   requests queued at the scheduler, summed over its workers
    vllm:num_requests_running   requests holding KV blocks, summed over the workers
    vllm:kv_cache_usage_perc    fraction (0-1) of the workers' KV blocks leased
    vllm:cache_config_info      1, with labels block_size and num_gpu_blocks (the blocks of all workers)

A poller asks the scheduler for its figures every `stats_interval_s` (at most 1 s). When the last
answer is older than `STALE_AFTER_S` (the scheduler is gone or stuck) the gauges disappear from
/metrics instead of repeating old numbers: the picker then counts this endpoint as saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway import convert
from gateway.core.types import SchedulerSnapshot

if TYPE_CHECKING:
    from llmserve.v1 import scheduler_pb2_grpc

logger = logging.getLogger(__name__)

STALE_AFTER_S = 3.0


class SchedulerStatsPoller:
    """Keeps `latest`, the scheduler's most recent figures, fresh while `run()` runs."""

    def __init__(self, stub: scheduler_pb2_grpc.SchedulerStub, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stub = stub
        self.interval_s = interval_s
        self.clock = clock
        self.latest: SchedulerSnapshot | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="scheduler-stats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        failing = False
        while True:
            try:
                stats = await self.stub.GetStats(convert.get_stats_request_to_pb(), timeout=max(1.0, self.interval_s))
                self.latest = convert.snapshot_from_pb(stats, self.clock())
                failing = False
            except grpc.aio.AioRpcError as err:
                if not failing:  # one line per outage, not one per poll
                    logger.warning("scheduler stats unavailable: %s", err.details() or err.code().name)
                failing = True
            await asyncio.sleep(self.interval_s)

    def fresh(self) -> SchedulerSnapshot | None:
        """The latest figures, or None when there are none younger than STALE_AFTER_S."""
        latest = self.latest
        if latest is None or self.clock() - latest.taken_s > STALE_AFTER_S:
            return None
        return latest


class VllmGauges(Collector):
    """A Prometheus collector of the picker's gauges, read from a poller at scrape time."""

    def __init__(self, poller: SchedulerStatsPoller, model_name: Callable[[], str]) -> None:
        self.poller = poller
        self.model_name = model_name

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # the families come and go with freshness: nothing to register up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.poller.fresh()
        if snapshot is None:
            return
        labels = ["model_name"]
        model = [self.model_name()]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(model, value)
            return family

        yield gauge("vllm:num_requests_waiting", "Requests queued at the scheduler (all workers).",
                    snapshot.num_waiting)
        yield gauge("vllm:num_requests_running", "Requests holding KV blocks (all workers).", snapshot.num_running)
        yield gauge("vllm:kv_cache_usage_perc", "Fraction of the workers' KV cache blocks in use (0-1).",
                    snapshot.kv_usage)
        info = GaugeMetricFamily("vllm:cache_config_info", "KV cache geometry of the workers behind this gateway.",
                                 labels=["model_name", "block_size", "num_gpu_blocks"])
        info.add_metric([*model, str(snapshot.block_size), str(snapshot.kv_blocks_total)], 1.0)
        yield info
