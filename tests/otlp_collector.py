"""An OTLP/gRPC trace receiver on 127.0.0.1 port 0, standing in for an OpenTelemetry collector in
tests that check what the services really export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export request it receives."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request: trace_service_pb2.ExportTraceServiceRequest,
                     context: grpc.aio.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[tuple[str, bytes, str]]:
        """(service.name, trace id, span name) of every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    out.extend((service, span.trace_id, span.name) for span in scope_spans.spans)
        return out


@asynccontextmanager
async def running_collector() -> AsyncIterator[tuple[OtlpCollector, int]]:
    """A started collector and its port; stopped on exit."""
    servicer = OtlpCollector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(0)
