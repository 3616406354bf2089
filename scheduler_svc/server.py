"""The Scheduler gRPC service: a thin shell over one scheduler core per worker.

`Submit` routes a request to the least-loaded healthy worker's core and streams its token events
from a per-request queue; cancelling the call aborts the request (its KV blocks are released by the
next plan). Requests evicted from a failed worker are re-routed to another worker, or wait until
one is healthy (the link says when) or has room, so no accepted request is lost. A request the
gateway resubmits after this scheduler restarted comes with the outputs its client already has
and continues after them.

Observability lives in `observe.SchedulerObserver`: `Submit` opens a request's spans while its
server span is current (that context also rides to the worker in the plan), the links report the
plans and results they handle, and a loop publishes queue and KV gauges every
`METRICS_PERIOD_S`; `start_scheduler` serves them on `config.metrics_port`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from llmserve.prefix import tenant_salt
from llmserve.runtime.errors import CapacityError, ConflictError, InvalidRequestError, UnavailableError
from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import ServiceServer, start_server
from llmserve.runtime.tls import Tls
from llmserve.runtime.tracing import client_interceptors, server_interceptors
from llmserve.v1 import scheduler_pb2_grpc
from scheduler_svc import convert
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.core.clock import WallClock
from scheduler_svc.core.plan import RequestOutput
from scheduler_svc.core.policy import make_policy
from scheduler_svc.core.prefix_mirror import PrefixMirror
from scheduler_svc.core.request import FinishReason, Request
from scheduler_svc.core.scheduler import Scheduler
from scheduler_svc.observe import SchedulerObserver
from scheduler_svc.policy_options import policy_options
from scheduler_svc.routing import LinkPicker
from scheduler_svc.capacity_watch import CapacityWatcher
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.worker_link import WorkerLink

if TYPE_CHECKING:
    from llmserve.v1 import scheduler_pb2, worker_pb2

logger = logging.getLogger(__name__)

# How often the queue-length and KV-block gauges are refreshed from the cores.
METRICS_PERIOD_S = 1.0


@dataclass
class _OpenRequest:
    """A request between Submit and its last event."""

    request: Request
    link: WorkerLink | None
    events: asyncio.Queue[RequestOutput] = field(default_factory=asyncio.Queue)
    finished: bool = False


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, config: SchedulerServiceConfig, metrics: ServiceMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ServiceMetrics.create("scheduler")
        self.observer = SchedulerObserver(self.metrics)
        self.clock = WallClock()
        self.links: list[WorkerLink] = []
        self._open: dict[str, _OpenRequest] = {}
        # Requests evicted from a failed worker that no worker could take yet (none healthy, or
        # full): placed when a worker becomes ready or a step frees room.
        self._orphans: list[Request] = []
        self._tasks: list[asyncio.Task[None]] = []
        # Host-tier checkpoints of every worker's requests (the tier is shared, so a request
        # resumes from its checkpoint on whichever worker it lands).
        self.checkpoints: CheckpointBook | None = CheckpointBook() if config.checkpoint_preemption else None
        self.capacity: CapacityWatcher | None = None
        # What the book needs to know whether a checkpoint fits the host tier (`_size_book`): the
        # tier's capacity (from the store's capacity stream) and the workers' KV geometry.
        self._host_tier_capacity_bytes = 0
        self._kv_geometry: tuple[int, int] | None = None  # (bytes per block, tokens per block)
        self._picker = LinkPicker(kv_aware=config.prefix_cache)  # routing.py

    # ---- wiring ----------------------------------------------------------------------------
    def make_core(self, info: worker_pb2.WorkerInfo) -> Scheduler:
        core_config = convert.core_config_from_worker(info, max_num_waiting=self.config.max_num_waiting,
                                                      rt_admission_control=self.config.rt_admission_control)
        policy = make_policy(self.config.policy, **policy_options(self.config, info))
        # A fresh mirror per core: a (re)connected worker starts with an empty cache.
        prefix = PrefixMirror(core_config.block_size) if self.config.prefix_cache else None
        block_bytes = convert.block_bytes_from_info(info)
        if block_bytes:
            self._kv_geometry = (block_bytes, core_config.block_size)
            self._size_book()
        return Scheduler(core_config, policy, self.clock, checkpoints=self.checkpoints, prefix=prefix)

    def _host_tier_sized(self, capacity_bytes: int) -> None:
        self._host_tier_capacity_bytes = capacity_bytes
        self._size_book()

    def _size_book(self) -> None:
        """Tells the checkpoint book the host tier's size once the tier and a worker are known."""
        if self.checkpoints is not None and self._kv_geometry is not None and self._host_tier_capacity_bytes:
            bytes_per_block, block_size = self._kv_geometry
            self.checkpoints.set_capacity(self._host_tier_capacity_bytes, bytes_per_block, block_size)

    async def connect_workers(self, client_interceptors: tuple[grpc.aio.ClientInterceptor, ...] = (),
                              tls: Tls | None = None) -> None:
        self.links = [
            WorkerLink(
                address,
                self.make_core,
                self._dispatch,
                self._reroute,
                self._worker_ready,
                self.observer,
                max_inflight_plans=self.config.max_inflight_plans,
                connect_timeout_s=self.config.worker_connect_timeout_s,
                retry_interval_s=self.config.worker_retry_interval_s,
                client_interceptors=client_interceptors,
                tls=tls,
            )
            for address in self.config.worker_addrs
        ]
        await asyncio.gather(*(link.connect() for link in self.links))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publish_metrics_forever())]
        if self.config.kvstore_addr:
            self.capacity = CapacityWatcher(self.config.kvstore_addr, self.metrics, self._pool_lost, tls=tls,
                                            on_store_restarted=self._store_restarted,
                                            on_host_tier_sized=self._host_tier_sized)
            self.capacity.start()

    def _pool_lost(self, worker_id: str) -> None:
        """The store expired a worker's leases: its requests must not keep using those blocks."""
        for link in self.links:
            if link.info is not None and link.worker_id == worker_id and link.healthy:
                link.fail(f"the KV store expired the leases of worker {worker_id}")

    def _store_restarted(self) -> None:
        """The KV store restarted: the workers re-declare their leases, but its host tier is gone."""
        if self.checkpoints is not None:
            lost = self.checkpoints.on_tier_lost()
            logger.warning("the KV store restarted: %d checkpoints lost, their requests are recomputed", lost)

    async def close(self) -> None:
        if self.capacity is not None:
            await self.capacity.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(link.close() for link in self.links))

    async def _publish_metrics_forever(self) -> None:
        while True:
            for link in self.links:
                if link.core is not None:
                    self.observer.publish(link.worker_id, link.core)
            await asyncio.sleep(METRICS_PERIOD_S)

    # ---- routing ---------------------------------------------------------------------------
    def _pick_link(self, request: Request | None = None) -> WorkerLink:
        return self._picker.pick(self.links, request)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        self._deliver(outputs)
        if self._orphans:  # a step ran: a full worker may have room now
            self._place_orphans()

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        self.observer.outputs(outputs)
        for output in outputs:
            entry = self._open.get(output.request_id)
            if entry is not None:
                entry.events.put_nowait(output)

    def _reroute(self, failed: WorkerLink, requests: list[Request]) -> None:
        for request in requests:
            if self._still_wanted(request):
                self.observer.requeued(request.request_id)
                link = self._place(request)
                if link is not None:
                    logger.info("re-routed %s from %s to %s", request.request_id, failed.address, link.address)

    def _worker_ready(self, link: WorkerLink) -> None:
        if self._orphans:
            logger.info("worker %s is ready: placing %d waiting requests", link.address, len(self._orphans))
            self._place_orphans()

    def _still_wanted(self, request: Request) -> bool:
        entry = self._open.get(request.request_id)
        return entry is not None and not entry.finished  # otherwise its client is gone

    def _place(self, request: Request) -> WorkerLink | None:
        """Submits a moved request to the least-loaded healthy worker, or parks it as an orphan
        when none can take it now (`_place_orphans` retries). A request that this worker can never
        serve (longer than its context or KV pool) ends with an error instead of waiting forever."""
        entry = self._open[request.request_id]
        entry.link = None
        try:
            link = self._pick_link(request)
            link.submit(request)
        except (UnavailableError, CapacityError):
            self._orphans.append(request)
            return None
        except InvalidRequestError as err:
            logger.warning("cannot move %s: %s", request.request_id, err)
            self._forget_checkpoint(request)
            self._deliver([RequestOutput(request.request_id, finish_reason=FinishReason.ERROR,
                                          num_prompt_tokens=request.num_prompt_tokens,
                                          num_preemptions=request.num_preemptions, error_message=str(err))])
            return None
        entry.link = link
        return link

    def _place_orphans(self) -> None:
        """Places every parked request that is still wanted; one that no worker can take yet is
        parked again. Called on the events that can change that: a worker became ready, a step ran."""
        pending, self._orphans = self._orphans, []
        for request in pending:
            if self._still_wanted(request):
                self._place(request)
            else:
                self._forget_checkpoint(request)

    def _forget_checkpoint(self, request: Request) -> None:
        """A parked request left without reaching a core again: its book entry goes (the tier's own
        eviction takes the bytes, as no worker that wrote them is told to drop them)."""
        if self.checkpoints is not None:
            self.checkpoints.forget(request.request_id)

    # ---- RPCs ------------------------------------------------------------------------------
    async def Submit(
        self, request: scheduler_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[scheduler_pb2.TokenEvent]:
        core_request = convert.request_from_proto(request, self.clock)
        if self.config.prefix_cache:  # the tenant's salt: tenants share no KV unless configured to
            core_request.prefix_salt = tenant_salt(core_request.tenant, self.config.prefix_shared_tenants)
        request_id = core_request.request_id
        if request_id in self._open:
            raise ConflictError(f"request_id {request_id!r} is already running")
        try:
            link = self._pick_link(core_request)
            entry = _OpenRequest(core_request, link)
            self._open[request_id] = entry
            self.observer.open_request(core_request)  # the Submit span is current here
            link.submit(core_request, new_arrival=True)
            if core_request.output_token_ids and self.checkpoints is not None:
                self.checkpoints.on_resubmitted(request_id)
        except BaseException:
            self._open.pop(request_id, None)
            self.observer.close_request(request_id, "rejected")
            raise
        finish_reason = "cancelled"
        try:
            while True:
                output = await entry.events.get()
                yield convert.output_to_event(output)
                if output.finish_reason is not None:
                    entry.finished = True
                    finish_reason = output.finish_reason.name.lower()
                    return
        finally:
            # Reached on normal finish, and on cancellation (client gone): abort unfinished work.
            self._open.pop(core_request.request_id, None)
            self.observer.close_request(core_request.request_id, finish_reason)
            if not entry.finished and entry.link is not None:
                entry.link.abort(core_request.request_id)

    async def Abort(self, request: scheduler_pb2.AbortRequest, context: grpc.aio.ServicerContext) -> scheduler_pb2.AbortResponse:
        request_id = convert.abort_id_from_pb(request)
        entry = self._open.get(request_id)
        if entry is None or entry.finished or entry.link is None:
            return convert.abort_response_to_pb(False)
        return convert.abort_response_to_pb(entry.link.abort(request_id))

    async def GetStats(self, request: scheduler_pb2.GetStatsRequest, context: grpc.aio.ServicerContext) -> scheduler_pb2.SchedulerStats:
        infos = [link.info for link in self.links if link.info is not None]
        return convert.stats_to_pb(
            self.config.policy,
            num_workers=sum(1 for link in self.links if link.healthy),
            num_steps=sum(link.stats.num_steps for link in self.links),
            core_stats=[link.core.stats() for link in self.links if link.core is not None],
            model=infos[0] if infos else None,
        )


async def start_scheduler(
    config: SchedulerServiceConfig, address: str = "127.0.0.1:0", metrics: ServiceMetrics | None = None
) -> ServiceServer:
    """Starts the scheduler: connects to every worker (waiting until each is healthy), then serves.
    Metrics go to `metrics` (default: a fresh registry, `result.service.metrics`), served at
    /metrics on `config.metrics_port` unless it is 0."""
    service = SchedulerService(config, metrics)
    tls = config.load_tls()
    running = await start_server(
        lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(service, server),
        [convert.SERVICE_NAME],
        address,
        interceptors=server_interceptors(),
        tls=tls,
    )
    running.cleanups.append(service.close)
    try:
        await service.connect_workers(tuple(client_interceptors()), tls)
    except BaseException:
        await running.stop(0)
        raise
    running.service = service
    metrics_server = start_metrics_server(config.metrics_port, service.metrics.registry)
    if metrics_server is not None:
        running.cleanups.append(lambda: asyncio.to_thread(metrics_server.close))
    await running.set_serving(True)
    return running
