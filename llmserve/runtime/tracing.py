"""OpenTelemetry tracing for the llmserve services: one trace per request across every hop.

Tracing is OFF unless the standard OpenTelemetry environment asks for it:
- `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, or
  `OTEL_TRACES_EXPORTER` naming `otlp` (spans go to an OTLP gRPC collector), or `console`;
- `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off whatever else is set.
The rest of the standard variables apply as the SDK defines them (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`).

How a request's trace crosses the stack:
- gateway → scheduler (`Submit`), worker → kvstore (`Checkpoint`, `Restore`) are per-request RPCs:
  the gRPC interceptors of `server_interceptors()` / `client_interceptors()` carry the context.
- scheduler → worker is one long-lived `Execute` stream per worker, and `KvStore.Apply` serves a
  whole step, so those carry each request's context IN the message (`NewRequest.trace_context`,
  `LeaseSpec.trace_context`, W3C `traceparent` maps from `inject_context()`); the receiver calls
  `extract_context()` and opens the request's spans under it (`request_span(..., context=...)`).
- A step serves many requests: `step_span()` opens one span per iteration, in its own trace,
  linked to every request it served.
Long-lived and periodic RPCs (health, reflection, `Execute`, `Heartbeat`, `WatchCapacity`) are not
traced (`UNTRACED_METHODS`): a span as long as a connection helps nobody.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind

logger = logging.getLogger(__name__)

TRACER_NAME = "llmserve"

# Methods that get no span: probes, server reflection, and streams/calls that are not a request.
UNTRACED_METHODS: frozenset[str] = frozenset(
    {
        "/llmserve.v1.Worker/Execute",
        "/llmserve.v1.KvStore/Heartbeat",
        "/llmserve.v1.KvStore/WatchCapacity",
    }
)
UNTRACED_SERVICE_PREFIXES: tuple[str, ...] = ("grpc.health.", "grpc.reflection.")


class SpanNames:
    """The names of llmserve's own spans (the interceptors name RPC spans `/package.Service/Method`)."""

    VALIDATE = "gateway.validate"  # gateway: request validation and tokenization
    DETOKENIZE = "gateway.detokenize"  # gateway: the output stream, stop strings
    QUEUE = "scheduler.queue"  # scheduler: arrival (or preemption) → first scheduled
    DECODE = "scheduler.decode"  # scheduler: first token → finish
    PREEMPT = "scheduler.preempt"  # scheduler: a preemption decision (an event-length span)
    STEP = "worker.step"  # worker: one iteration, linked to every request it served
    PREFILL_CHUNK = "worker.prefill_chunk"  # worker: one prefill chunk of one request
    CHECKPOINT = "worker.checkpoint"  # worker: spilling a request's KV to the store
    RESTORE = "worker.restore"  # worker: bringing a request's KV back
    LEASE = "kvstore.lease"  # kvstore: blocks leased to one request within an Apply


class Attr:
    """Span attribute keys (one namespace, so dashboards and queries can rely on them)."""

    REQUEST_ID = "llmserve.request_id"
    SERVICE_CLASS = "llmserve.service_class"
    SLO_TTFT_MS = "llmserve.slo.ttft_ms"
    SLO_TPOT_MS = "llmserve.slo.tpot_ms"
    SLO_DEADLINE_MS = "llmserve.slo.deadline_ms"
    PRIORITY = "llmserve.priority"
    WORKER_ID = "llmserve.worker_id"
    STEP_ID = "llmserve.step_id"
    NUM_TOKENS = "llmserve.num_tokens"
    NUM_COMPUTED_TOKENS = "llmserve.num_computed_tokens"
    NUM_REQUESTS = "llmserve.num_requests"
    NUM_BLOCKS = "llmserve.num_blocks"
    NUM_BYTES = "llmserve.num_bytes"
    PREEMPT_KIND = "llmserve.preempt.kind"  # "checkpoint" | "recompute"
    FINISH_REASON = "llmserve.finish_reason"


_TRUE = ("1", "true", "yes", "on")


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* environment asks for traces to be exported (see the module doc)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporters = _exporter_names(env)
    if exporters:
        return exporters != ["none"]
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    return [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]


def _build_exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = _exporter_names(env) or ["otlp"]  # an endpoint alone means OTLP
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            # Endpoint, headers, insecure, timeout and compression come from OTEL_EXPORTER_OTLP_*.
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none")
    return exporters


def configure_tracing(service_name: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Sets up the process's tracer provider from the OTEL_* environment, or returns None (off).

    Call once per process, first thing in `main()`, before `start_server` and `open_channel` (their
    interceptors bind to the provider installed now). `service_name` is the resource's
    `service.name` unless `OTEL_SERVICE_NAME` overrides it. The provider becomes the global one
    (the first provider set in a process wins, as OpenTelemetry allows only one). Call
    `shutdown_tracing(provider)` while draining so buffered spans are flushed.
    """
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    for exporter in _build_exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))  # batching from OTEL_BSP_*
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        logger.warning("a tracer provider was already installed; %s spans go to that one", service_name)
    return provider


def shutdown_tracing(provider: TracerProvider | None) -> None:
    """Flushes and stops `provider` (a no-op for None). Call it last while draining."""
    if provider is not None:
        provider.shutdown()


def add_span_processor(processor: SpanProcessor, service_name: str = "llmserve") -> TracerProvider:
    """Adds `processor` to the process's SDK provider, installing one first if there is none.
    For in-process stacks and tests (e.g. an `InMemorySpanExporter` in a `SimpleSpanProcessor`);
    since a process has one global provider, every in-process service shares it."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "a non-SDK tracer provider is installed"
    provider.add_span_processor(processor)
    return provider


def tracing_active() -> bool:
    """Whether an SDK tracer provider is installed (by `configure_tracing` or by a test)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def _traced(details: object) -> bool:
    from opentelemetry.instrumentation.grpc.filters import _full_method  # the library's own parser

    method = _full_method(details)
    if method in UNTRACED_METHODS:
        return False
    return not method.lstrip("/").startswith(UNTRACED_SERVICE_PREFIXES)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Interceptors for `start_server(..., interceptors=...)`: a server span per traced RPC, child of
    the caller's context. Empty while tracing is off, so an untraced process pays nothing."""
    if not tracing_active():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced)]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for `open_channel(addr, interceptors=...)`: a client span per traced RPC and the
    W3C `traceparent` in its metadata. Empty while tracing is off."""
    if not tracing_active():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(filter_=_traced))


def tracer() -> trace.Tracer:
    """llmserve's tracer on the global provider (a no-op tracer while tracing is off)."""
    return trace.get_tracer(TRACER_NAME)


def inject_context(context: otel_context.Context | None = None) -> dict[str, str]:
    """The W3C trace context (`traceparent`, `tracestate`) of `context` (default: the current one),
    for a proto `map<string, string> trace_context` field. Empty when there is no span to continue."""
    carrier: dict[str, str] = {}
    inject(carrier, context=context)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> otel_context.Context:
    """The context a peer injected with `inject_context` (an empty context for an empty map)."""
    return extract(dict(carrier))


def context_of(span: Span) -> otel_context.Context:
    """A context whose current span is `span` (to parent later spans, or to inject)."""
    return trace.set_span_in_context(span)


def request_attributes(
    request_id: str,
    service_class: str | None = None,
    *,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    deadline_ms: float | None = None,
    priority: int | None = None,
) -> dict[str, str | float | int]:
    """Span attributes that identify a request and its SLO; unset values are left out.
    `service_class` is a lower-case label ("real_time", "deadline", "best_effort")."""
    attrs: dict[str, str | float | int] = {Attr.REQUEST_ID: request_id}
    if service_class:
        attrs[Attr.SERVICE_CLASS] = service_class
    for key, value in ((Attr.SLO_TTFT_MS, ttft_ms), (Attr.SLO_TPOT_MS, tpot_ms), (Attr.SLO_DEADLINE_MS, deadline_ms)):
        if value:
            attrs[key] = float(value)
    if priority is not None:
        attrs[Attr.PRIORITY] = int(priority)
    return attrs


def start_request_span(
    name: str,
    attributes: Mapping[str, str | float | int] | None = None,
    *,
    context: otel_context.Context | None = None,
    start_time_ns: int | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Link] = (),
) -> Span:
    """Starts (does not activate) a span that the caller ends with `span.end()`: for phases that
    begin and end in different callbacks, such as `SpanNames.QUEUE` (enqueue → first schedule).
    `context` is the request's context (default: the current one); `links` e.g. the step span
    (`Link(step.get_span_context())`) for a `SpanNames.PREFILL_CHUNK`."""
    return tracer().start_span(
        name, context=context, kind=kind, attributes=dict(attributes or {}), links=list(links), start_time=start_time_ns
    )


@contextmanager
def request_span(
    name: str,
    attributes: Mapping[str, str | float | int] | None = None,
    *,
    context: otel_context.Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    """A span around a block, child of `context` (a request's extracted context) or of the current
    span, and current inside the block (so RPCs made there carry it, and logs show its trace id).
    An exception escaping the block is recorded on the span and re-raised."""
    with tracer().start_as_current_span(name, context=context, attributes=dict(attributes or {}), links=list(links)) as span:
        yield span


@contextmanager
def step_span(
    step_id: int,
    request_contexts: Iterable[otel_context.Context],
    attributes: Mapping[str, str | float | int] | None = None,
) -> Iterator[Span]:
    """One span per iteration (`SpanNames.STEP`), in its own trace, linked to the span of every
    request in `request_contexts`; current inside the block (so the step's `KvStore.Apply` call is
    its child)."""
    contexts = list(request_contexts)
    links = []
    for ctx in contexts:
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    attrs = {Attr.STEP_ID: int(step_id), Attr.NUM_REQUESTS: len(contexts), **dict(attributes or {})}
    # A fresh root: a step belongs to no single request, and a connection-long trace is useless.
    root = otel_context.Context()
    with tracer().start_as_current_span(SpanNames.STEP, context=root, links=links, attributes=attrs) as span:
        yield span
