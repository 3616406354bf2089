"""The worker service: `Worker.Describe` and `Worker.Execute`, and `start_worker`.

Execute applies plans strictly in order. A reader task keeps taking plans off the stream while a
step runs, and the forward pass runs on the worker's one torch thread (`ForwardThread`, which also
loaded and warmed up the model), so the event loop stays free to receive plan N+1, answer health
checks and heartbeat during step N. A step's leases come
from the blocks the worker holds ahead (`KvLeaseClient`, llmserve/plan_book/leases.py): it waits
for the KV store only when those run short, and the store hears of the changes in batches, off
the step's path. When the stream ends, every request's state is dropped, its leases are
released and the reserve is given back, in one sync.

A KV store that dies does not stop the worker: steps that need no new blocks go on, steps that
do fail with KV_UNAVAILABLE (the scheduler recomputes them), and when the store is back the
worker re-declares everything it holds; the host tier's checkpoints died with the store, so the
runner forgets what it had sent there (`StepRunner.forget_store`).

Checkpoints (docs/bidirectional_kv.md): the runner snapshots the KV of requests preempted by
checkpoint (and lazily, full blocks of running non-real-time requests) to host bytes; the
`KvCheckpointClient` sends them to the store's host tier in the background, in order. Resumed
requests' checkpoints are fetched between the Apply and the forward pass.

`worker_svc/start.py` assembles the process around it (`start_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from llmserve.plan import RestoreSpec, StepErrorCode
from llmserve.plan_book import PlanError
from llmserve.plan_book.prefix_cache import PrefixCacheStats
from llmserve.runtime.errors import PreconditionError
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.v1 import worker_pb2_grpc

from worker_svc import convert
from worker_svc.checkpoint_client import KvCheckpointClient
from worker_svc.core.checkpoint import BlockFormat, CheckpointWrite, RestoredKv
from worker_svc.fit_watch import FitWatch
from worker_svc.forward_thread import ForwardThread, timed
from worker_svc.core.runner import StepRunner
from worker_svc.core.types import WorkerDescription
from worker_svc.kv_client import UNREACHABLE_CODES, KvLeaseClient
from worker_svc.step_phases import observe_step, step_phases
from worker_svc.step_trace import traced_step

if TYPE_CHECKING:
    from llmserve.v1 import kvstore_pb2, worker_pb2

logger = logging.getLogger(__name__)

T = TypeVar("T")

def _chunk_list(write: CheckpointWrite, fmt: BlockFormat, max_chunk_bytes: int) -> list[kvstore_pb2.KvChunk]:
    return list(convert.checkpoint_chunks(write, fmt, max_chunk_bytes))


def kv_failure_code(code: grpc.StatusCode) -> StepErrorCode:
    """Store errors that say it could not be reached (the step may succeed once it is back) are
    KV_UNAVAILABLE; any other refusal (RESOURCE_EXHAUSTED, a class conflict) is KV_REFUSED."""
    return StepErrorCode.KV_UNAVAILABLE if code in UNREACHABLE_CODES else StepErrorCode.KV_REFUSED


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    """Serves one StepRunner to one Execute stream at a time (a worker has one scheduler)."""

    def __init__(self, runner: StepRunner, description: WorkerDescription, kv: KvLeaseClient,
                 metrics: ServiceMetrics | None = None, checkpoints: KvCheckpointClient | None = None,
                 max_chunk_bytes: int = 4 << 20, forward_thread: ForwardThread | None = None) -> None:
        """`forward_thread`: where the steps' torch work runs (None: on the event loop's thread)."""
        self.runner = runner
        self._forward_thread = forward_thread
        self.description = description
        self.kv = kv
        self.metrics = metrics
        self.checkpoints = checkpoints
        self._max_chunk_bytes = max_chunk_bytes
        self._stream_open = False
        self._in_thread: asyncio.Future[Any] | None = None
        self._store_restarted = False  # set by the lease client; applied between steps
        self._prefix_seen = PrefixCacheStats()  # the prefix cache's counters at the last step's metrics
        self._step_ns: tuple[int, int] | None = None  # the last step's wall time and encoding (None: it failed)
        calibration = description.step_cost
        self._fit_watch = FitWatch(calibration.fit.cost, description.worker_id) if calibration is not None else None
        kv.set_on_store_restarted(self._note_store_restarted)

    def _note_store_restarted(self) -> None:
        logger.warning("the KV store restarted: its host tier is empty, checkpoints fall back to recompute")
        self._store_restarted = True

    async def Describe(self, request: worker_pb2.DescribeRequest,
                       context: grpc.aio.ServicerContext) -> worker_pb2.WorkerInfo:
        return convert.worker_info(self.description)

    async def Execute(
        self, request_iterator: AsyncIterator[worker_pb2.BatchPlan], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.StepResult]:
        if self._stream_open:
            raise PreconditionError(
                f"worker {self.description.worker_id} already serves an Execute stream; one scheduler per worker")
        self._stream_open = True
        plans: asyncio.Queue[worker_pb2.BatchPlan | None] = asyncio.Queue()

        async def read_plans() -> None:
            try:
                async for plan in request_iterator:
                    plans.put_nowait(plan)
            finally:
                plans.put_nowait(None)

        # The steps run in their own task and hand their results to the stream through a queue, so
        # that gRPC's write of result N (which the stream awaits before it takes the next item)
        # overlaps step N+1 instead of delaying it.
        results: asyncio.Queue[worker_pb2.StepResult | None] = asyncio.Queue()
        reader = asyncio.create_task(read_plans())
        stepper = asyncio.create_task(self._run_plans(plans, results))
        try:
            while (message := await results.get()) is not None:
                yield message
            stepper.result()  # an unexpected failure of the step loop ends the stream with it
        finally:
            for task in (reader, stepper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close_stream()

    async def _run_plans(self, plans: asyncio.Queue[worker_pb2.BatchPlan | None],
                         results: asyncio.Queue[worker_pb2.StepResult | None]) -> None:
        """Runs the plans in order, each result into `results`; None there when the plans end."""
        try:
            while True:
                waited_from = time.perf_counter_ns()
                busy = bool(self.runner.request_ids)  # requests in flight: a wait here starves the pipeline
                if (plan := await plans.get()) is None:
                    break
                got = time.perf_counter_ns()
                self._step_ns = None
                results.put_nowait(await self._run_plan(plan))
                between = {"idle": got - waited_from} if busy else {}
                if self._step_ns is not None:  # a step that ran: what followed it until its result was handed on
                    between["report"] = time.perf_counter_ns() - got - sum(self._step_ns)
                self._observe_between(between)
        finally:
            results.put_nowait(None)

    async def _close_stream(self) -> None:
        # A step may still run in its thread (the stream was cancelled mid-step): let it finish
        # before the runner's state is dropped.
        if self._in_thread is not None and not self._in_thread.done():
            await asyncio.wait([self._in_thread])
        ids = self.runner.reset()
        self._send_checkpoint_ops()
        try:
            released = await self.kv.release_all(ids)
            logger.info("Execute stream closed: dropped %d requests, released %d blocks", len(ids), released)
        except grpc.aio.AioRpcError as err:
            # The keeper has the releases: its background syncs tell the store once it answers.
            logger.warning("telling the KV store of %d released requests failed (%s %s): it is told later",
                           len(ids), err.code().name, err.details())
        finally:
            self._stream_open = False
            if self._fit_watch is not None:
                self._fit_watch.flush()

    async def _run_plan(self, plan_pb: worker_pb2.BatchPlan) -> worker_pb2.StepResult:
        try:
            message = await self._step(plan_pb)
            prefix = self.runner.book.prefix  # what it cached and evicted, on every result
            if prefix is not None:
                convert.set_prefix_report(message, prefix.take_report())
                self._observe_prefix(prefix.stats, prefix.index.num_cached)
            return message
        finally:
            self.kv.after_step()  # a sync due goes now, in the background, while the result travels

    async def _step(self, plan_pb: worker_pb2.BatchPlan) -> worker_pb2.StepResult:
        start = time.perf_counter_ns()
        step_id = convert.step_id_from_proto(plan_pb)
        if self._store_restarted:  # no step in flight here: the runner's state is ours to change
            self._store_restarted = False
            self.runner.forget_store()
        try:
            plan = convert.plan_from_proto(plan_pb)
            delta = self.runner.begin_step(plan)
            self._send_checkpoint_ops()
        except PlanError as err:
            self._send_checkpoint_ops()  # the plan's drops stand, and with them their checkpoints
            logger.warning("step %d rejected: %s", step_id, err)
            return convert.error_result(step_id, StepErrorCode.INVALID_PLAN, f"invalid plan: {err}",
                                        total_ns=time.perf_counter_ns() - start, rejected_request_id=err.request_id)
        plan_decode_ns = time.perf_counter_ns() - start - self.runner.begin_checkpoint_ns
        with traced_step(self.runner, self.description.worker_id, plan):
            kv_start = time.perf_counter_ns()
            try:
                grants, kv_rpcs = await self.kv.lease(delta)
            except grpc.aio.AioRpcError as err:
                return self._leases_failed(step_id, err, kv_start, start)
            kv_ns = time.perf_counter_ns() - kv_start
            fetch_start = time.perf_counter_ns()
            restored = await self._fetch_restores(delta.restores) if delta.restores else {}
            fetch_ns = time.perf_counter_ns() - fetch_start if delta.restores else 0
            try:
                submitted = time.perf_counter_ns()
                output, began, ended = await self._thread(lambda: timed(self.runner.finish_step, grants, restored))
                to_thread_ns, from_thread_ns = max(0, began - submitted), max(0, time.perf_counter_ns() - ended)
                self._send_checkpoint_ops()
            except Exception as err:  # noqa: BLE001 - any failure fails the step, not the stream
                dropped = self.runner.abort_step(kv_applied=True)
                self._send_checkpoint_ops()
                logger.exception("step %d failed, dropped %d requests", step_id, len(dropped))
                return convert.error_result(step_id, StepErrorCode.STEP_FAILED,
                                            f"step failed: {type(err).__name__}: {err}",
                                            kv_ns=kv_ns, total_ns=time.perf_counter_ns() - start)
        total_ns = time.perf_counter_ns() - start
        observe_step(self.metrics, self.description.worker_id, output, len(plan.scheduled), len(delta.restores),
                     total_ns, fetch_ns)
        if self._fit_watch is not None and output.timing is not None:
            self._fit_watch.observe(output.timing, total_ns)
        failed = self.checkpoints.take_failed() if self.checkpoints is not None else []
        encode_start = time.perf_counter_ns()
        message = convert.step_result(output, failed)
        encode_ns = time.perf_counter_ns() - encode_start
        convert.set_timing(message, output, kv_ns=kv_ns, total_ns=total_ns, restore_fetch_ns=fetch_ns,
                           plan_decode_ns=plan_decode_ns, encode_ns=encode_ns, kv_rpcs=kv_rpcs)
        if self.metrics is not None and (t := output.timing) is not None:
            self.metrics.observe_step_phases(self.description.worker_id, step_phases(
                t, self.runner.last_phases, total_ns=total_ns, plan_decode_ns=plan_decode_ns, kv_ns=kv_ns,
                to_thread_ns=to_thread_ns, from_thread_ns=from_thread_ns, encode_ns=encode_ns))
        self._step_ns = (total_ns, encode_ns)
        return message

    def _observe_between(self, phases: dict[str, int]) -> None:
        if self.metrics is not None:
            self.metrics.observe_step_phases(self.description.worker_id, phases)

    def _leases_failed(self, step_id: int, err: grpc.aio.AioRpcError, kv_start: int, start: int) -> worker_pb2.StepResult:
        """The step's leases failed: its releases stand (the keeper took them back), nothing was
        leased, its requests are dropped for the scheduler to recompute."""
        dropped = self.runner.abort_step(kv_applied=True)
        self._send_checkpoint_ops()
        code = kv_failure_code(err.code())
        logger.warning("step %d: KV leases failed (%s), dropped %d requests", step_id, err.code().name, len(dropped))
        what = "could not be reached for" if code is StepErrorCode.KV_UNAVAILABLE else "refused"
        return convert.error_result(step_id, code, f"KV store {what} the step's leases: {err.code().name}: "
                                    f"{err.details()}", kv_ns=time.perf_counter_ns() - kv_start,
                                    total_ns=time.perf_counter_ns() - start)

    def _observe_prefix(self, stats: PrefixCacheStats, num_cached: int) -> None:
        """The prefix cache's counters since the previous step, to the worker's metrics."""
        last, self._prefix_seen = self._prefix_seen, dataclasses.replace(stats)
        if self.metrics is not None:
            self.metrics.observe_prefix_cache(
                self.description.worker_id, num_cached, hit=stats.hit_blocks - last.hit_blocks,
                stale=stats.missed_blocks - last.missed_blocks, cached=stats.inserted_blocks - last.inserted_blocks,
                evicted=stats.evicted_blocks - last.evicted_blocks, host_hit=stats.host_hit_blocks - last.host_hit_blocks,
                demoted=stats.demoted_blocks - last.demoted_blocks,
                host_dropped=stats.host_dropped_blocks - last.host_dropped_blocks)

    def _send_checkpoint_ops(self) -> None:
        """Hands the runner's checkpoint writes and drops to the background sender, in order."""
        ops = self.runner.take_checkpoint_ops()
        if not ops or self.checkpoints is None:
            return
        fmt = self.runner.checkpoints.format
        for op in ops:
            if isinstance(op, str):
                self.checkpoints.drop(op)
            else:  # the messages are built when the sender takes the write, off the step's path
                self.checkpoints.write(op.request_id, functools.partial(_chunk_list, op, fmt, self._max_chunk_bytes))

    async def _fetch_restores(self, specs: tuple[RestoreSpec, ...]) -> dict[str, RestoredKv | None]:
        """Fetches the checkpoints of resumed requests (None for one that cannot be had)."""
        if self.checkpoints is None:
            return {}
        fmt = self.runner.checkpoints.format
        replies = await asyncio.gather(*(
            self.checkpoints.restore(convert.restore_request(s.request_id, fmt, s.first_block)) for s in specs))
        restored: dict[str, RestoredKv | None] = {}
        for spec, chunks in zip(specs, replies):
            try:
                restored[spec.request_id] = convert.restored_from_chunks(chunks, spec.first_block) if chunks else None
            except ValueError as err:
                logger.warning("restore of %s unusable (%s): recomputing it", spec.request_id, err)
                restored[spec.request_id] = None
        return restored

    async def _thread(self, fn: Callable[[], T]) -> T:
        if self._forward_thread is None:
            return fn()
        self._in_thread = self._forward_thread.submit(fn)  # on the thread's queue before this task yields
        return await asyncio.shield(self._in_thread)
