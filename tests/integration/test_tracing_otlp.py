"""configure_tracing() reads the standard OTEL_* environment: OFF by default, and with an OTLP
endpoint it exports real OTLP/gRPC to a collector (here a collector stub serving the
opentelemetry-proto TraceService on 127.0.0.1:0). Each export case runs in a fresh interpreter,
since a process may install only one global tracer provider."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from tests.otlp_collector import OtlpCollector, running_collector
from llmserve.runtime import tracing

# A service process in miniature: configure from env, a server-side span with request attributes,
# then drain (shutdown flushes the batch processor).
_SERVICE_SCRIPT = """
import sys
from llmserve.runtime import tracing
provider = tracing.configure_tracing("scheduler")
print("configured" if provider is not None else "off", flush=True)
with tracing.request_span(tracing.SpanNames.QUEUE, tracing.request_attributes("req-1", "real_time", ttft_ms=250.0)):
    pass
tracing.shutdown_tracing(provider)
"""


@pytest.fixture
async def collector() -> AsyncIterator[tuple[OtlpCollector, int]]:
    async with running_collector() as running:
        yield running


async def _run_service(env_overrides: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(env_overrides)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVICE_SCRIPT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_otlp_endpoint_exports_spans_with_service_name(collector: tuple[OtlpCollector, int]) -> None:
    servicer, port = collector
    assert await _run_service({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}) == "configured"
    spans = [
        (resource_spans.resource, span)
        for request in servicer.requests
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert len(spans) == 1
    resource, span = spans[0]
    resource_attrs = {a.key: a.value.string_value for a in resource.attributes}
    assert resource_attrs["service.name"] == "scheduler"
    assert span.name == tracing.SpanNames.QUEUE
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs[tracing.Attr.REQUEST_ID].string_value == "req-1"
    assert attrs[tracing.Attr.SERVICE_CLASS].string_value == "real_time"
    assert attrs[tracing.Attr.SLO_TTFT_MS].double_value == 250.0


async def test_otel_service_name_overrides(collector: tuple[OtlpCollector, int]) -> None:
    servicer, port = collector
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_SERVICE_NAME": "scheduler-eu"}
    assert await _run_service(env) == "configured"
    names = {
        a.value.string_value
        for r in servicer.requests
        for rs in r.resource_spans
        for a in rs.resource.attributes
        if a.key == "service.name"
    }
    assert names == {"scheduler-eu"}


async def test_off_by_default_and_when_disabled(collector: tuple[OtlpCollector, int]) -> None:
    servicer, port = collector
    assert await _run_service({}) == "off"
    endpoint = f"http://127.0.0.1:{port}"
    assert await _run_service({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "true"}) == "off"
    assert await _run_service({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "none"}) == "off"
    assert servicer.requests == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_tracing_requested(env: dict[str, str], expected: bool) -> None:
    assert tracing.tracing_requested(env) is expected


def test_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing.configure_tracing("gateway", {"OTEL_TRACES_EXPORTER": "zipkin"})
