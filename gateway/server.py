"""The Gateway gRPC service: a thin async shell over `gateway.core`.

`Generate` prepares the request (INVALID_ARGUMENT before anything is submitted), admits it (the
concurrency limit, duplicate ids), opens one `Scheduler.Submit` stream over the shared channel and
turns its token events into text deltas. Ending the Submit call early (stop string, Cancel RPC,
client gone) is how the scheduler learns to abort the request. The Submit stream survives a
scheduler restart: `gateway.upstream` resubmits the request with the tokens it has.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from gateway import convert
from gateway.config import GatewayConfig
from gateway.core.chat import has_chat_template
from gateway.core.ids import new_request_id, random_seed
from gateway.core.prepare import prepare_request
from gateway.core.registry import RequestRegistry
from gateway.core.stream import OutputStream
from gateway.core.types import Delta, FinishReason, ModelLimits, PreparedRequest
from gateway.upstream import ResubmitPolicy, SchedulerUpstream, SubmitHandle
from llmserve.model_source import load_tokenizer, resolve_model
from llmserve.runtime.channel import is_serving, open_channel, wait_healthy
from llmserve.runtime.errors import LlmServeError, UnavailableError, error_for_status
from llmserve.runtime.logs import REQUEST_ID
from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import ServiceServer, start_server
from llmserve.runtime.tracing import (
    Attr,
    SpanNames,
    client_interceptors,
    request_attributes,
    request_span,
    server_interceptors,
    start_request_span,
)
from llmserve.v1 import gateway_pb2_grpc, scheduler_pb2_grpc

if TYPE_CHECKING:
    from llmserve.v1 import gateway_pb2, scheduler_pb2, worker_pb2

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Running:
    """A Generate call between admission and its last message."""

    call: SubmitHandle | None = None  # its Scheduler.Submit call, across resubmits
    cancel_requested: bool = False
    finished: bool = False


@dataclass(frozen=True)
class ServedModel:
    """What the gateway needs to know about the model, fixed once the service is ready."""

    tokenizer: Any
    limits: ModelLimits
    worker_info: worker_pb2.WorkerInfo
    has_chat_template: bool


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        config: GatewayConfig,
        scheduler: scheduler_pb2_grpc.SchedulerStub,
        upstream: SchedulerUpstream,
        metrics: ServiceMetrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.scheduler = scheduler
        self.upstream = upstream
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self.registry: RequestRegistry[_Running] = RequestRegistry(config.max_concurrent_requests)
        self.model: ServedModel | None = None
        self._rng = random.SystemRandom()

    def set_model(self, tokenizer: Any, worker_info: worker_pb2.WorkerInfo) -> None:
        self.model = ServedModel(
            tokenizer, convert.limits_from_worker_info(worker_info), worker_info, has_chat_template(tokenizer)
        )

    # ---- Generate ----------------------------------------------------------------------------
    async def Generate(
        self, request: gateway_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.GenerateResponse]:
        arrival_s, arrival_unix_s = self.clock(), self.wall_clock()
        model = self.model
        if model is None:
            raise UnavailableError("the gateway is starting: retry shortly")
        self.registry.ensure_room()
        generate_input = convert.generate_input_from_pb(request)
        with request_span(SpanNames.VALIDATE, request_attributes(generate_input.request_id or "(unassigned)")):
            prepared = prepare_request(
                generate_input,
                model.tokenizer,
                model.limits,
                new_request_id=new_request_id,
                new_seed=lambda: random_seed(self._rng),
                arrival_unix_s=arrival_unix_s,
            )
        running = _Running()
        self.registry.admit(prepared.request_id, running)
        REQUEST_ID.set(prepared.request_id)
        try:
            async for message in self._stream(prepared, running, model, arrival_s):
                yield message
        finally:
            self.registry.release(prepared.request_id)

    async def _stream(
        self,
        prepared: PreparedRequest,
        running: _Running,
        model: ServedModel,
        arrival_s: float,
    ) -> AsyncIterator[gateway_pb2.GenerateResponse]:
        """The client's responses; a failure ends the stream with its domain error (raised)."""
        rid = prepared.request_id
        out = OutputStream.start(prepared, model.tokenizer, arrival_s)
        slo = prepared.slo
        span = start_request_span(
            SpanNames.DETOKENIZE,
            request_attributes(rid, slo.service_class.name.lower(), ttft_ms=slo.ttft_ms, tpot_ms=slo.tpot_ms,
                               deadline_ms=slo.deadline_ms, priority=slo.priority),
        )
        running.call = handle = SubmitHandle()
        events = self.upstream.token_events(prepared, handle)
        final: Delta | None = None
        upstream_error: grpc.aio.AioRpcError | None = None
        try:
            try:
                async for token_ids, finish_reason, error_message in events:
                    delta = out.on_tokens(token_ids, finish_reason, self.clock(), error_message)
                    if delta.finished:
                        final = delta
                        break
                    if delta.text or delta.token_ids:
                        yield convert.response_to_pb(rid, delta)
                if final is None:
                    final = out.fail(self.clock(), "the scheduler ended the stream without a finish reason")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                # Our own Cancel RPC cancelled the Submit call; a cancelled task is the client leaving.
                if not running.cancel_requested or (task is not None and task.cancelling()):
                    raise
                final = out.cancel(self.clock())
            except grpc.aio.AioRpcError as err:
                upstream_error = err
                final = out.fail(self.clock(), err.details() or err.code().name)
            running.finished = True
            if upstream_error is None:
                yield convert.response_to_pb(rid, final)
        finally:
            await events.aclose()  # stop string or client gone: cancels the call, the scheduler aborts
            if final is None:
                final = out.cancel(self.clock())  # the client went away mid-stream
            self._record(prepared, final, arrival_s)
            span.set_attribute(Attr.FINISH_REASON, final.finish_reason.name.lower())
            span.end()
        if upstream_error is not None:
            raise _scheduler_error(upstream_error)
        if final.finish_reason == FinishReason.ERROR:
            raise LlmServeError(final.error_message or "the request failed")  # INTERNAL, with the scheduler's reason

    def _record(self, prepared: PreparedRequest, final: Delta, arrival_s: float) -> None:
        usage = final.usage
        if usage is None:
            return
        self.metrics.observe_finished(
            int(prepared.slo.service_class),
            ttft_s=usage.ttft_ms / 1e3 if usage.completion_tokens else None,
            tpot_s=usage.mean_tpot_ms / 1e3 if usage.completion_tokens > 1 else None,
            e2e_s=self.clock() - arrival_s,
            slo_attained=usage.slo_attained,
            finish_reason=final.finish_reason.name.lower(),
        )

    # ---- Cancel / GetModelInfo ---------------------------------------------------------------
    async def Cancel(self, request: gateway_pb2.CancelRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.CancelResponse:
        request_id = convert.cancel_id_from_pb(request)
        running = self.registry.get(request_id)
        if running is None or running.finished or running.cancel_requested:
            return convert.cancel_response_to_pb(False)
        running.cancel_requested = True
        if running.call is not None:
            running.call.cancel()
        try:
            await self.scheduler.Abort(convert.abort_request_to_pb(request_id), timeout=self.config.abort_timeout_s)
        except grpc.aio.AioRpcError as err:
            # The cancelled Submit call aborts the request anyway; Abort only makes it sooner.
            logger.warning("Scheduler.Abort(%s) failed: %s", request_id, err.details())
        return convert.cancel_response_to_pb(True)

    async def GetModelInfo(
        self, request: gateway_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ModelInfo:
        model = self.model
        if model is None:
            raise UnavailableError("the gateway is starting: retry shortly")
        try:
            stats = await self.scheduler.GetStats(convert.get_stats_request_to_pb(), timeout=10.0)
        except grpc.aio.AioRpcError as err:
            raise _scheduler_error(err) from err
        return convert.model_info_to_pb(stats, model.has_chat_template, served=model.worker_info)


def _scheduler_error(err: grpc.aio.AioRpcError) -> LlmServeError:
    """The scheduler's status as this client's (RESOURCE_EXHAUSTED, UNAVAILABLE, ...; CANCELLED, the
    scheduler gone, is UNAVAILABLE), its message marked as the scheduler's."""
    return error_for_status(err.code(), f"scheduler: {err.details() or err.code().name}")


async def _scheduler_model(stub: scheduler_pb2_grpc.SchedulerStub, timeout_s: float) -> worker_pb2.WorkerInfo:
    """The WorkerInfo that the scheduler reports, polled until a worker has described its model."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no worker has described its model yet"
    while loop.time() < deadline:
        try:
            described = convert.described_model_from_pb(await stub.GetStats(convert.get_stats_request_to_pb(), timeout=5.0))
            if described is not None:
                return described
        except grpc.aio.AioRpcError as err:
            last = f"{err.code().name}: {err.details()}"
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the scheduler reported no model within {timeout_s:.0f}s ({last})")


async def start_gateway(
    config: GatewayConfig,
    address: str = "127.0.0.1:0",
    metrics: ServiceMetrics | None = None,
    tokenizer: Any | None = None,
) -> ServiceServer:
    """Serves the Gateway on `address` ("host:0" picks a free port) and returns once it is SERVING.

    Loads the tokenizer of `config.model` while waiting for the scheduler at `config.scheduler_addr`
    to be healthy and to report its workers' model (context length, vocabulary). Until then the
    health status is NOT_SERVING and Generate answers UNAVAILABLE. `stop()` on the result drains
    (NOT_SERVING, stop accepting, streams get the grace), then closes the scheduler channel and the
    metrics endpoint. `metrics` defaults to a fresh registry (`result.service.metrics`);
    `tokenizer`, when given, is used instead of loading the model's (in-process stacks, tests).
    """
    metrics = metrics or ServiceMetrics.create("gateway")
    tls = config.load_tls()
    channel = open_channel(config.scheduler_addr, interceptors=client_interceptors(), tls=tls)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    upstream = SchedulerUpstream(stub, lambda timeout_s: is_serving(channel, timeout_s=timeout_s),
                                 ResubmitPolicy(outage_s=config.scheduler_outage_s))
    service = GatewayService(config, stub, upstream, metrics)
    running = await start_server(
        lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(service, server),
        [convert.SERVICE_NAME],
        address,
        interceptors=server_interceptors(),
        tls=tls,
        require_client_cert=False,  # the public port: clients hold no cluster identity
    )
    running.service = service
    running.cleanups.append(channel.close)
    metrics_server = start_metrics_server(config.metrics_port, metrics.registry)
    if metrics_server is not None:
        running.cleanups.append(lambda: asyncio.to_thread(metrics_server.close))
    try:
        if tokenizer is None:
            source = resolve_model(config.model, config.load_format, config.tokenizer)  # type: ignore[arg-type]
            tokenizer, _ = await asyncio.gather(
                asyncio.to_thread(load_tokenizer, source),
                wait_healthy(config.scheduler_addr, timeout_s=config.scheduler_timeout_s, tls=tls),
            )
        else:
            await wait_healthy(config.scheduler_addr, timeout_s=config.scheduler_timeout_s, tls=tls)
        service.set_model(tokenizer, await _scheduler_model(stub, config.scheduler_timeout_s))
    except BaseException:
        await running.stop(0)
        raise
    await running.set_serving(True)
    logger.info("gateway serving %s on %s (scheduler %s)", service.model.limits.model_name, running.address, config.scheduler_addr)  # type: ignore[union-attr]
    return running
