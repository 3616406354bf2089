"""The real KV store service with tracing and metrics: a worker's step (its own trace, linked to the
requests) calls Apply with each lease's trace context, and the store opens one `kvstore.lease` span
per lease in that request's trace; pool usage shows up in the store's metrics registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime import tracing
from llmserve.runtime.channel import open_channel
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
async def kvstore(exporter: InMemorySpanExporter) -> AsyncIterator[tuple[ServiceServer, ServiceMetrics]]:
    metrics = ServiceMetrics.create("kvstore")
    running = await start_kvstore(KvStoreConfig(), "127.0.0.1:0", metrics=metrics)
    exporter.clear()
    yield running, metrics
    await running.stop(0)


async def test_leases_join_their_requests_traces(kvstore: tuple[ServiceServer, ServiceMetrics], exporter: InMemorySpanExporter) -> None:
    server, metrics = kvstore
    carriers = {}
    for rid in ("rt-1", "be-1"):
        with tracing.request_span("scheduler.submit", tracing.request_attributes(rid)):
            carriers[rid] = tracing.inject_context()
    classes = {"rt-1": common_pb2.SERVICE_CLASS_REAL_TIME, "be-1": common_pb2.SERVICE_CLASS_BEST_EFFORT}
    async with open_channel(server.address, interceptors=tracing.client_interceptors()) as channel:
        stub = kvstore_pb2_grpc.KvStoreStub(channel)
        await stub.RegisterPool(kvstore_pb2.RegisterPoolRequest(worker_id="worker-0", num_blocks=32, block_size=16, bytes_per_block=1024))
        with tracing.step_span(1, [tracing.extract_context(c) for c in carriers.values()]):
            reply = await stub.Apply(
                kvstore_pb2.ApplyRequest(
                    worker_id="worker-0",
                    leases=[kvstore_pb2.LeaseSpec(request_id=rid, service_class=classes[rid], num_blocks=3, trace_context=carrier)
                            for rid, carrier in carriers.items()]
                    + [kvstore_pb2.LeaseSpec(request_id="untraced", service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT, num_blocks=1)],
                )
            )
    assert sorted(len(g.block_ids) for g in reply.grants) == [1, 3, 3]
    spans = exporter.get_finished_spans()
    submits = {s.attributes[tracing.Attr.REQUEST_ID]: s for s in spans if s.name == "scheduler.submit"}
    leases = {s.attributes[tracing.Attr.REQUEST_ID]: s for s in spans if s.name == tracing.SpanNames.LEASE}
    assert set(leases) == {"rt-1", "be-1"}  # no span for the untraced lease
    for rid, lease in leases.items():
        assert lease.context.trace_id == submits[rid].context.trace_id
        assert lease.attributes[tracing.Attr.NUM_BLOCKS] == 3 and lease.attributes[tracing.Attr.WORKER_ID] == "worker-0"
    apply_server = [s for s in spans if s.name == "/llmserve.v1.KvStore/Apply" and s.kind == SpanKind.SERVER]
    step = next(s for s in spans if s.name == tracing.SpanNames.STEP)
    assert len(apply_server) == 1 and apply_server[0].context.trace_id == step.context.trace_id
    # Pool usage reaches the registry within the publishing period (1 s).
    get = metrics.registry.get_sample_value
    for _ in range(30):
        if get("llmserve_kv_blocks_used", {"worker": "worker-0", "service_class": "best_effort"}) == 4:
            break
        await asyncio.sleep(0.1)
    assert get("llmserve_kv_blocks_used", {"worker": "worker-0", "service_class": "real_time"}) == 3
    assert get("llmserve_kv_blocks_used", {"worker": "worker-0", "service_class": "best_effort"}) == 4
    assert get("llmserve_kv_blocks_total", {"worker": "worker-0"}) == 32
