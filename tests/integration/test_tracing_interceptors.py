"""Tracing across a real grpc.aio server on 127.0.0.1:0: the interceptors of llmserve.runtime.tracing
put client span → server span → inner span in ONE trace, for unary, server-streaming and
client-streaming calls; untraced methods make no spans; a proto `trace_context` map carries a
request's trace where no per-request RPC exists (the Execute stream, a batched Apply)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmserve.runtime import tracing
from llmserve.runtime.channel import open_channel
from llmserve.runtime.logs import JsonFormatter
from llmserve.runtime.server import ServiceServer, service_full_name, start_server
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc

INNER = "test.inner"


class _TracedKvStore(kvstore_pb2_grpc.KvStoreServicer):
    """A KvStore whose handlers open an inner span, the way the real servicers do."""

    async def GetPoolStats(self, request: kvstore_pb2.GetPoolStatsRequest, context: grpc.aio.ServicerContext) -> kvstore_pb2.PoolStats:
        with tracing.request_span(INNER, {"llmserve.worker_id": request.worker_id}):
            return kvstore_pb2.PoolStats(worker_id=request.worker_id, num_blocks=8)

    async def Restore(self, request: kvstore_pb2.RestoreRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[kvstore_pb2.KvChunk]:
        with tracing.request_span(INNER, tracing.request_attributes(request.request_id, "best_effort")):
            for index in range(3):
                yield kvstore_pb2.KvChunk(request_id=request.request_id, block_index=index, final=index == 2)

    async def Checkpoint(self, request_iterator: AsyncIterator[kvstore_pb2.KvChunk], context: grpc.aio.ServicerContext) -> kvstore_pb2.CheckpointResponse:
        blocks = 0
        async for chunk in request_iterator:
            blocks += 1
        with tracing.request_span(INNER, {tracing.Attr.NUM_BLOCKS: blocks}):
            return kvstore_pb2.CheckpointResponse(num_blocks=blocks)

    async def Heartbeat(self, request: kvstore_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext) -> kvstore_pb2.HeartbeatResponse:
        return kvstore_pb2.HeartbeatResponse(known=True)

    async def Apply(self, request: kvstore_pb2.ApplyRequest, context: grpc.aio.ServicerContext) -> kvstore_pb2.ApplyResponse:
        # What kvstore_svc does: one span per lease, in the trace of the lease's request.
        for lease in request.leases:
            attrs = {**tracing.request_attributes(lease.request_id), tracing.Attr.NUM_BLOCKS: lease.num_blocks}
            with tracing.request_span(tracing.SpanNames.LEASE, attrs, context=tracing.extract_context(lease.trace_context)):
                pass
        return kvstore_pb2.ApplyResponse()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
async def server(exporter: InMemorySpanExporter) -> AsyncIterator[ServiceServer]:
    assert tracing.tracing_active()
    running = await start_server(
        lambda s: kvstore_pb2_grpc.add_KvStoreServicer_to_server(_TracedKvStore(), s),
        [service_full_name(kvstore_pb2.DESCRIPTOR, "KvStore")],
        interceptors=tracing.server_interceptors(),
    )
    await running.set_serving()
    exporter.clear()
    yield running
    await running.stop(0)


def _by_name(spans: tuple[ReadableSpan, ...], name: str, kind: SpanKind) -> ReadableSpan:
    matches = [s for s in spans if s.name == name and s.kind == kind]
    assert len(matches) == 1, f"expected one {kind.name} span {name!r}, got {[(s.name, s.kind.name) for s in spans]}"
    return matches[0]


def _assert_chain(spans: tuple[ReadableSpan, ...], method: str) -> None:
    client = _by_name(spans, method, SpanKind.CLIENT)
    server = _by_name(spans, method, SpanKind.SERVER)
    inner = _by_name(spans, INNER, SpanKind.INTERNAL)
    assert len({client.context.trace_id, server.context.trace_id, inner.context.trace_id}) == 1
    assert client.parent is None
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert inner.parent is not None and inner.parent.span_id == server.context.span_id


async def test_unary_call_is_one_trace(server: ServiceServer, exporter: InMemorySpanExporter) -> None:
    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        reply = await kvstore_pb2_grpc.KvStoreStub(channel).GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    assert reply.num_blocks == 8
    spans = exporter.get_finished_spans()
    _assert_chain(spans, "/llmserve.v1.KvStore/GetPoolStats")
    assert _by_name(spans, INNER, SpanKind.INTERNAL).attributes["llmserve.worker_id"] == "w0"


async def test_server_streaming_call_is_one_trace(server: ServiceServer, exporter: InMemorySpanExporter) -> None:
    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        call = kvstore_pb2_grpc.KvStoreStub(channel).Restore(kvstore_pb2.RestoreRequest(request_id="r1"))
        chunks = [chunk async for chunk in call]
    assert [c.block_index for c in chunks] == [0, 1, 2]
    spans = exporter.get_finished_spans()
    _assert_chain(spans, "/llmserve.v1.KvStore/Restore")
    inner = _by_name(spans, INNER, SpanKind.INTERNAL)
    assert inner.attributes[tracing.Attr.REQUEST_ID] == "r1"
    assert inner.attributes[tracing.Attr.SERVICE_CLASS] == "best_effort"


async def test_client_streaming_call_is_one_trace(server: ServiceServer, exporter: InMemorySpanExporter) -> None:
    async def chunks() -> AsyncIterator[kvstore_pb2.KvChunk]:
        for index in range(4):
            yield kvstore_pb2.KvChunk(request_id="r2", block_index=index, final=index == 3)

    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        reply = await kvstore_pb2_grpc.KvStoreStub(channel).Checkpoint(chunks())
    assert reply.num_blocks == 4
    spans = exporter.get_finished_spans()
    _assert_chain(spans, "/llmserve.v1.KvStore/Checkpoint")
    assert _by_name(spans, INNER, SpanKind.INTERNAL).attributes[tracing.Attr.NUM_BLOCKS] == 4


async def test_client_span_is_child_of_callers_span(server: ServiceServer, exporter: InMemorySpanExporter) -> None:
    """A call made inside a request's span continues that request's trace (gateway → scheduler)."""
    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        with tracing.request_span(tracing.SpanNames.VALIDATE, tracing.request_attributes("r3", "real_time", ttft_ms=200.0)) as outer:
            await kvstore_pb2_grpc.KvStoreStub(channel).GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    spans = exporter.get_finished_spans()
    client = _by_name(spans, "/llmserve.v1.KvStore/GetPoolStats", SpanKind.CLIENT)
    assert client.parent is not None and client.parent.span_id == outer.get_span_context().span_id
    assert {s.context.trace_id for s in spans} == {outer.get_span_context().trace_id}
    validate = _by_name(spans, tracing.SpanNames.VALIDATE, SpanKind.INTERNAL)
    assert validate.attributes[tracing.Attr.SLO_TTFT_MS] == 200.0


async def test_probes_and_heartbeats_make_no_spans(server: ServiceServer, exporter: InMemorySpanExporter) -> None:
    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        beat = await kvstore_pb2_grpc.KvStoreStub(channel).Heartbeat(kvstore_pb2.HeartbeatRequest(worker_id="w0"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING and beat.known
    assert exporter.get_finished_spans() == ()


async def test_trace_context_in_messages_joins_request_traces(server: ServiceServer, exporter: InMemorySpanExporter) -> None:
    """Worker side of a step: each lease carries its request's context; the step span links them all;
    the store's per-lease spans land in each request's own trace."""
    requests = {}
    for request_id in ("ra", "rb"):
        with tracing.request_span("scheduler.submit", tracing.request_attributes(request_id)) as span:
            requests[request_id] = tracing.inject_context()
        assert requests[request_id]["traceparent"].split("-")[1] == format(span.get_span_context().trace_id, "032x")
    contexts = [tracing.extract_context(carrier) for carrier in requests.values()]
    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        with tracing.step_span(7, contexts, {tracing.Attr.WORKER_ID: "w0"}) as step:
            await kvstore_pb2_grpc.KvStoreStub(channel).Apply(
                kvstore_pb2.ApplyRequest(
                    worker_id="w0",
                    leases=[
                        kvstore_pb2.LeaseSpec(request_id=rid, num_blocks=2, trace_context=carrier)
                        for rid, carrier in requests.items()
                    ],
                )
            )
    spans = exporter.get_finished_spans()
    submits = {s.attributes[tracing.Attr.REQUEST_ID]: s for s in spans if s.name == "scheduler.submit"}
    leases = {s.attributes[tracing.Attr.REQUEST_ID]: s for s in spans if s.name == tracing.SpanNames.LEASE}
    assert set(leases) == {"ra", "rb"}
    for rid in ("ra", "rb"):
        assert leases[rid].context.trace_id == submits[rid].context.trace_id
        assert leases[rid].parent is not None and leases[rid].parent.span_id == submits[rid].context.span_id
    step_span = _by_name(spans, tracing.SpanNames.STEP, SpanKind.INTERNAL)
    assert step_span.parent is None and step_span.context.trace_id not in {s.context.trace_id for s in submits.values()}
    assert {link.context.span_id for link in step_span.links} == {s.context.span_id for s in submits.values()}
    assert step_span.attributes[tracing.Attr.NUM_REQUESTS] == 2
    apply_client = _by_name(spans, "/llmserve.v1.KvStore/Apply", SpanKind.CLIENT)
    assert apply_client.parent is not None and apply_client.parent.span_id == step.get_span_context().span_id


def test_untraced_request_has_empty_carrier() -> None:
    assert tracing.inject_context() == {}
    with tracing.request_span("outer"):
        # An empty carrier (an untraced peer) starts a new trace rather than joining the current one.
        with tracing.request_span("orphan", context=tracing.extract_context({})) as span:
            assert span.get_span_context().is_valid
            assert span.parent is None  # type: ignore[attr-defined]


def test_json_logs_carry_the_current_trace_id(exporter: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("scheduler"))
    log = logging.getLogger("test.tracing.logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with tracing.request_span(tracing.SpanNames.QUEUE) as span:
            log.info("queued")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside


def test_prefill_chunk_spans_join_the_request_and_link_the_step(exporter: InMemorySpanExporter) -> None:
    """The worker's pattern: per step one `worker.step`; per scheduled request a span in its own trace
    (from `NewRequest.trace_context`) that links back to the step."""
    from opentelemetry.trace import Link

    exporter.clear()
    with tracing.request_span("scheduler.submit", tracing.request_attributes("rq")) as submit:
        carrier = tracing.inject_context()
    request_context = tracing.extract_context(carrier)
    with tracing.step_span(3, [request_context]) as step:
        chunk = tracing.start_request_span(
            tracing.SpanNames.PREFILL_CHUNK,
            {tracing.Attr.NUM_TOKENS: 64, tracing.Attr.NUM_COMPUTED_TOKENS: 128},
            context=request_context,
            links=[Link(step.get_span_context())],
        )
        chunk.end()
    spans = exporter.get_finished_spans()
    finished_chunk = _by_name(spans, tracing.SpanNames.PREFILL_CHUNK, SpanKind.INTERNAL)
    assert finished_chunk.context.trace_id == submit.get_span_context().trace_id
    assert finished_chunk.parent is not None and finished_chunk.parent.span_id == submit.get_span_context().span_id
    assert [link.context.span_id for link in finished_chunk.links] == [step.get_span_context().span_id]
    assert finished_chunk.attributes[tracing.Attr.NUM_COMPUTED_TOKENS] == 128
