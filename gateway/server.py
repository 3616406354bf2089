"""The Gateway service: the gRPC servicer (a thin front over `gateway.lifecycle`) and
`start_gateway`, which serves it beside the OpenAI-compatible HTTP front in the same event loop.

`Generate` converts the request, lets the lifecycle authenticate, prepare (INVALID_ARGUMENT before
anything is submitted), admit and stream it, and converts each delta back. Ending the stream early
(client gone, Cancel RPC) is how the scheduler learns to abort the request. The Submit stream
survives a scheduler restart: `gateway.upstream` resubmits the request with the tokens it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from gateway import convert
from gateway.config import GatewayConfig
from gateway.core.auth import KeyBook
from gateway.http_front import OpenAIFront, bound_port, start_http_front
from gateway.lifecycle import Lifecycle, ServedModel
from gateway.stats import SchedulerStatsPoller, VllmGauges
from gateway.upstream import ResubmitPolicy, SchedulerUpstream, scheduler_error
from llmserve.model_source import load_tokenizer, resolve_model
from llmserve.runtime.channel import is_serving, open_channel, wait_healthy
from llmserve.runtime.metrics import ServiceMetrics, start_metrics_server
from llmserve.runtime.server import MAX_MESSAGE_BYTES, ServiceServer, start_server
from llmserve.runtime.tls import Tls
from llmserve.runtime.tracing import client_interceptors, server_interceptors
from llmserve.v1 import gateway_pb2_grpc, scheduler_pb2_grpc

if TYPE_CHECKING:
    from llmserve.v1 import gateway_pb2, worker_pb2

logger = logging.getLogger(__name__)

__all__ = ["GatewayService", "ServedModel", "start_gateway"]

# Room in a request message beside its prompt: token ids of a long context, stop strings, ids.
MESSAGE_OVERHEAD_BYTES = 2 * 1024 * 1024


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.metrics = lifecycle.metrics
        self.http_port: int | None = None  # the HTTP front's bound port, once it serves

    @property
    def model(self) -> ServedModel | None:
        return self.lifecycle.model

    @property
    def registry(self) -> Any:
        """The running requests (tests: nothing left behind)."""
        return self.lifecycle.registry

    async def Generate(
        self, request: gateway_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.GenerateResponse]:
        life = self.lifecycle
        life.served_model()  # UNAVAILABLE before anything else while starting or draining
        inp = convert.generate_input_from_pb(request)
        caller = life.caller(_authorization(context), inp.tenant)
        generation = await life.start(inp, caller)
        try:
            async with aclosing(generation.deltas()) as deltas:
                async for delta in deltas:
                    yield convert.response_to_pb(generation.request_id, delta, generation.slo)
        finally:
            generation.close()

    async def Cancel(
        self, request: gateway_pb2.CancelRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CancelResponse:
        caller = self.lifecycle.caller(_authorization(context))
        return convert.cancel_response_to_pb(await self.lifecycle.cancel(convert.cancel_id_from_pb(request), caller))

    async def GetModelInfo(
        self, request: gateway_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ModelInfo:
        life = self.lifecycle
        life.caller(_authorization(context))
        model = life.served_model()
        try:
            stats = await life.scheduler.GetStats(convert.get_stats_request_to_pb(), timeout=10.0)
        except grpc.aio.AioRpcError as err:
            raise scheduler_error(err) from err
        return convert.model_info_to_pb(stats, model.has_chat_template, served=model.worker_info)


async def _scheduler_model(stub: scheduler_pb2_grpc.SchedulerStub, timeout_s: float) -> worker_pb2.WorkerInfo:
    """The WorkerInfo that the scheduler reports, polled until a worker has described its model."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no worker has described its model yet"
    while loop.time() < deadline:
        try:
            stats = await stub.GetStats(convert.get_stats_request_to_pb(), timeout=5.0)
            described = convert.described_model_from_pb(stats)
            if described is not None:
                return described
        except grpc.aio.AioRpcError as err:
            last = f"{err.code().name}: {err.details()}"
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the scheduler reported no model within {timeout_s:.0f}s ({last})")


def load_keys(config: GatewayConfig) -> KeyBook | None:
    """The API keys of `--api-keys-file`, or None (keys off); ValueError names a bad line."""
    if config.api_keys_file is None:
        return None
    path = Path(config.api_keys_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"--api-keys-file {path}: {err.strerror or err}") from None
    return KeyBook.parse(text, str(path))


async def start_gateway(
    config: GatewayConfig,
    address: str = "127.0.0.1:0",
    metrics: ServiceMetrics | None = None,
    tokenizer: Any | None = None,
) -> ServiceServer:
    """Serves the Gateway on `address` ("host:0" picks a free port) and the HTTP front on
    `config.http_address` (unless empty; `result.service.http_port` is its port), and returns once
    both are SERVING.

    Loads the tokenizer of `config.model` while waiting for the scheduler at `config.scheduler_addr`
    to be healthy and to report its workers' model (context length, vocabulary). Until then the
    health status is NOT_SERVING, Generate answers UNAVAILABLE and HTTP 503. `stop()` on the result
    drains both fronts at once (NOT_SERVING / 503 for new requests, streams get the grace), then
    closes the scheduler channel and the metrics endpoints. `metrics` defaults to a fresh registry
    (`result.service.metrics`); `tokenizer`, when given, is used instead of loading the model's.
    """
    keys = load_keys(config)
    metrics = metrics or ServiceMetrics.create("gateway")
    tls = config.load_tls()
    channel = open_channel(config.scheduler_addr, interceptors=client_interceptors(), tls=tls)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    upstream = SchedulerUpstream(stub, lambda timeout_s: is_serving(channel, timeout_s=timeout_s),
                                 ResubmitPolicy(outage_s=config.scheduler_outage_s))
    executor = ThreadPoolExecutor(config.tokenizer_threads, thread_name_prefix="tokenize")
    lifecycle = Lifecycle(config, stub, upstream, metrics, executor, keys)
    service = GatewayService(lifecycle)
    poller = SchedulerStatsPoller(stub, config.stats_interval_s)
    metrics.registry.register(VllmGauges(poller, lambda: lifecycle.model.limits.model_name if lifecycle.model else ""))
    running = await start_server(
        lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(service, server),
        [convert.SERVICE_NAME],
        address,
        interceptors=server_interceptors(),
        tls=tls,
        require_client_cert=False,  # the public port: clients hold no cluster identity
        max_receive_bytes=min(MAX_MESSAGE_BYTES, config.max_prompt_bytes + MESSAGE_OVERHEAD_BYTES),
    )
    running.service = service

    async def mark_draining(grace_s: float) -> None:
        lifecycle.draining = True

    running.drains.append(mark_draining)
    running.cleanups.append(poller.stop)
    running.cleanups.append(channel.close)
    running.cleanups.append(lambda: asyncio.to_thread(executor.shutdown, wait=False, cancel_futures=True))
    try:
        await _start_side_ports(config, running, service, metrics)
        tokenizer = await _tokenizer_once_scheduler_healthy(config, tokenizer, tls)
        lifecycle.set_model(tokenizer, await _scheduler_model(stub, config.scheduler_timeout_s))
        poller.start()
    except BaseException:
        await running.stop(0)
        raise
    await running.set_serving(True)
    served = lifecycle.served_model()
    logger.info("gateway serving %s on %s (HTTP %s, scheduler %s)", served.limits.model_name, running.address,
                config.http_address or "off", config.scheduler_addr)
    return running


async def _start_side_ports(config: GatewayConfig, running: ServiceServer, service: GatewayService,
                            metrics: ServiceMetrics) -> None:
    """The HTTP front (unless `http_address` is empty) and the metrics endpoint, stopped with `running`."""
    if config.http_address:
        front = OpenAIFront(service.lifecycle, metrics.registry, model_aliases=(config.model,))
        runner = await start_http_front(front, config.http_address,
                                        max_body_bytes=2 * config.max_prompt_bytes + MESSAGE_OVERHEAD_BYTES,
                                        shutdown_timeout_s=config.drain_grace_s)
        service.http_port = bound_port(runner)
        # The HTTP front drains beside gRPC: listeners close, open streams get the grace.
        running.drains.append(lambda grace_s: runner.cleanup())
    metrics_server = start_metrics_server(config.metrics_port, metrics.registry)
    if metrics_server is not None:
        running.cleanups.append(lambda: asyncio.to_thread(metrics_server.close))


async def _tokenizer_once_scheduler_healthy(config: GatewayConfig, tokenizer: Any | None, tls: Tls | None) -> Any:
    """The given tokenizer, or the model's, loaded while waiting for the scheduler to be healthy."""
    if tokenizer is not None:
        await wait_healthy(config.scheduler_addr, timeout_s=config.scheduler_timeout_s, tls=tls)
        return tokenizer
    source = resolve_model(config.model, config.load_format, config.tokenizer)  # type: ignore[arg-type]
    loaded, _ = await asyncio.gather(
        asyncio.to_thread(load_tokenizer, source),
        wait_healthy(config.scheduler_addr, timeout_s=config.scheduler_timeout_s, tls=tls),
    )
    return loaded
