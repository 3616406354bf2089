"""One worker as the scheduler sees it: its scheduler core, its `Execute` stream, and the loop
that keeps up to `max_inflight_plans` plans in flight on it.

The sender plans step N+1 as soon as step N is on the wire (the core advances its counts
optimistically; the worker holds the sampled tokens), so the worker never waits for a gRPC round
trip or for `schedule()` between steps. The receiver applies each result to the core and hands the
token outputs to the service. If the stream breaks, the link evicts every unfinished request
(they carry all their known tokens) for the service to route elsewhere, then reconnects; it tells
the service each time the worker is ready (again), so requests waiting for a worker go to it. A
worker that refuses the stream because it still serves the previous one (this scheduler restarted
and the worker has not noticed the old stream's end yet) is tried again after `retry_interval_s`.
Messages are read and built by `convert` only.

A failed step (`StepResult.error_code`) is recomputed by the core whatever its code; the link
counts failures by code, and after KV_UNAVAILABLE (the worker could not reach the KV store) it
sends no new plan for `retry_interval_s`, so that a store outage does not turn into a tight loop
of steps that fail at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from llmserve.plan import StepErrorCode
from llmserve.runtime.channel import open_channel, wait_healthy
from llmserve.runtime.tls import Tls
from llmserve.v1 import worker_pb2_grpc
from scheduler_svc import convert
from scheduler_svc.core.plan import RequestOutput
from scheduler_svc.core.request import Request
from scheduler_svc.core.scheduler import Scheduler
from scheduler_svc.observe import SchedulerObserver

if TYPE_CHECKING:
    from llmserve.v1 import worker_pb2

    CoreFactory = Callable[[worker_pb2.WorkerInfo], Scheduler]

logger = logging.getLogger(__name__)


@dataclass
class LinkStats:
    num_steps: int = 0
    num_failed_steps: int = 0
    num_reconnects: int = 0
    failed_steps_by_code: dict[StepErrorCode, int] = field(default_factory=dict)


class WorkerLink:
    """Drives one worker. All methods run on the event loop; the core is only touched here."""

    def __init__(
        self,
        address: str,
        make_core: CoreFactory,
        on_outputs: Callable[[list[RequestOutput]], None],
        on_evicted: Callable[[WorkerLink, list[Request]], None],
        on_ready: Callable[[WorkerLink], None],
        observer: SchedulerObserver,
        max_inflight_plans: int = 2,
        connect_timeout_s: float = 300.0,
        retry_interval_s: float = 1.0,
        client_interceptors: tuple[grpc.aio.ClientInterceptor, ...] = (),
        tls: Tls | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._make_core = make_core
        self._on_outputs = on_outputs
        self._on_evicted = on_evicted
        self._on_ready = on_ready
        self._observer = observer
        self._max_inflight = max_inflight_plans
        self._connect_timeout_s = connect_timeout_s
        self._retry_interval_s = retry_interval_s
        self._interceptors = client_interceptors
        self.core: Scheduler | None = None
        self.info: worker_pb2.WorkerInfo | None = None  # its Describe, held for GetStats
        self._worker_id = ""
        self.stats = LinkStats()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._closing = False
        self._failure = ""  # set by fail(): end the stream at the next turn of the drive loop
        self._paused_until = 0.0  # loop time before which no plan is sent (after KV_UNAVAILABLE)
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Waits for the worker, describes it, builds the core, and starts the drive loop."""
        await self._open()
        self._task = asyncio.create_task(self._run_forever(), name=f"worker-link-{self.address}")

    async def _open(self) -> None:
        await wait_healthy(self.address, timeout_s=self._connect_timeout_s, tls=self._tls)
        self._channel = open_channel(self.address, self._interceptors, self._tls)
        self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        self.info = await self._stub.Describe(convert.describe_request_to_pb(), timeout=30.0)
        self._worker_id = convert.worker_id_from_info(self.info)
        self.core = self._make_core(self.info)
        self._ready.set()
        self._on_ready(self)

    @property
    def worker_id(self) -> str:
        """The worker's id (its `Describe`), or its address before it answered; the metrics label."""
        return self._worker_id or self.address

    @property
    def healthy(self) -> bool:
        return self._ready.is_set() and not self._closing

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if getattr(self, "_channel", None) is not None:
            await self._channel.close()

    # ---- requests --------------------------------------------------------------------------
    def submit(self, request: Request, *, new_arrival: bool = False) -> None:
        """Queues a request on this worker (raises the core's InvalidRequestError/CapacityError).
        `new_arrival`: a Submit, not a request moved from another worker (admission.py)."""
        assert self.core is not None
        self.core.add_request(request, new_arrival=new_arrival)
        self._wake.set()

    def abort(self, request_id: str) -> bool:
        if self.core is None:
            return False
        aborted = self.core.abort_request(request_id)
        if aborted and self.core.num_inflight_steps == 0:
            # Nothing in flight would carry the CANCELLED event: deliver it now.
            outputs = self.core.take_outputs()
            if outputs:
                self._on_outputs(outputs)
        self._wake.set()
        return aborted

    def fail(self, reason: str) -> None:
        """Gives up on the worker's current state (e.g. the KV store expired its leases, so its
        requests' blocks may be handed out again): the drive loop ends the Execute stream (the
        worker drops every request), evicts the requests for re-routing, and reconnects."""
        self._failure = reason
        self._wake.set()

    def cached_tokens(self, request: Request) -> int:
        """Leading prompt tokens of `request` this worker's prefix cache holds (its mirror), for routing."""
        return self.core.cached_tokens(request) if self.core is not None else 0

    def load(self) -> int:
        """Outstanding work, for routing: tokens still to compute or generate on this worker."""
        if self.core is None or not self.healthy:
            return 1 << 62
        return self.core.outstanding_tokens()

    # ---- the drive loop --------------------------------------------------------------------
    async def _run_forever(self) -> None:
        while not self._closing:
            refused = False
            try:
                await self._drive()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the stream broke: the worker died or restarted
                if self._closing:
                    return
                logger.warning("worker %s stream failed (%s): re-routing its requests", self.address, err)
                refused = _still_serving_another(err)
            if self._closing:
                return
            self._evict_all()
            if refused:
                # The worker has not yet noticed that the previous scheduler's stream ended (this
                # scheduler restarted): give it a moment rather than a tight reconnect loop.
                await asyncio.sleep(self._retry_interval_s)
            await self._reconnect()

    def _evict_all(self) -> None:
        self._ready.clear()
        if self.core is not None:
            evicted = self.core.evict_all()
            if evicted:
                self._on_evicted(self, evicted)

    async def _reconnect(self) -> None:
        self.stats.num_reconnects += 1
        while not self._closing:
            try:
                await self._channel.close()
                await self._open()
                logger.info("worker %s is back", self.address)
                return
            except Exception as err:  # keep trying until closed
                logger.info("worker %s not reachable yet (%s)", self.address, err)
                await asyncio.sleep(self._retry_interval_s)

    async def _drive(self) -> None:
        assert self.core is not None
        loop = asyncio.get_running_loop()
        call = self._stub.Execute()
        inflight: collections.deque[tuple[int, int]] = collections.deque()  # (step_id, batch size)
        receiver = asyncio.create_task(self._receive(call, inflight))
        try:
            while not self._closing:
                if self._failure:
                    reason, self._failure = self._failure, ""
                    raise ConnectionError(reason)
                if receiver.done():
                    receiver.result()  # re-raises the stream error
                    raise ConnectionError("worker closed the Execute stream")
                sent = False
                pause_s = self._paused_until - loop.time()
                while pause_s <= 0 and len(inflight) < self._max_inflight:
                    plan = self.core.schedule()
                    if plan.is_empty():
                        break
                    inflight.append((plan.step_id, len(plan.scheduled)))
                    self._observer.plan_sent(self.worker_id, plan, self.core)
                    await call.write(convert.plan_to_proto(plan, self._observer.carriers))
                    sent = True
                if not sent:
                    self._wake.clear()
                    waiter = asyncio.create_task(self._wake.wait())
                    await asyncio.wait({waiter, receiver}, timeout=pause_s if pause_s > 0 else None,
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            call.cancel()

    async def _receive(self, call: grpc.aio.StreamStreamCall, inflight: collections.deque[tuple[int, int]]) -> None:
        assert self.core is not None
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise ConnectionError("worker ended the Execute stream")
            expected, batch_size = inflight.popleft()
            result = convert.result_from_proto(message)
            if result.step_id != expected:
                raise ConnectionError(f"worker answered step {result.step_id}, expected {expected}")
            if result.error:
                self._step_failed(result.error_code, result.step_id, result.error)
                outputs = self.core.update(result)  # re-queues the step's requests (recompute)
            else:
                self.stats.num_steps += 1
                self._observer.step_done(self.worker_id, result.timing, batch_size)
                outputs = self.core.update(result)
            if outputs:
                self._on_outputs(outputs)
            self._wake.set()

    def _step_failed(self, code: StepErrorCode, step_id: int, error: str) -> None:
        stats = self.stats
        stats.num_failed_steps += 1
        stats.failed_steps_by_code[code] = stats.failed_steps_by_code.get(code, 0) + 1
        logger.error("worker %s failed step %d (%s): %s", self.address, step_id, code.name, error)
        if code is StepErrorCode.KV_UNAVAILABLE:
            self._paused_until = asyncio.get_running_loop().time() + self._retry_interval_s


def _still_serving_another(err: Exception) -> bool:
    """The worker refused the Execute stream: it still serves another one (worker.proto)."""
    return isinstance(err, grpc.aio.AioRpcError) and err.code() == grpc.StatusCode.FAILED_PRECONDITION
