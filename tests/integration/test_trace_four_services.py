"""One request through the four real services (kvstore, worker on dummy SmolLM2 weights, scheduler,
gateway), all in this process on 127.0.0.1:0, with tracing on (an in-memory exporter on the shared
provider) and each service's own metrics registry.

- A real-time request yields ONE trace holding spans of every service: the gateway's Generate and
  validate spans, the scheduler's Submit, queue and decode spans, the worker's prefill chunk (linked
  to its step span, which lives in its own trace) and the KV store's lease; the scheduler and
  worker spans carry the request's id, class and SLO.
- The metrics count it in its class: TTFT and finish counters move for real_time, not best_effort;
  the scheduler and the worker record its steps and the scheduler publishes KV and queue gauges.
- Two best-effort requests that do not both fit in the worker's 8 KV blocks force a preemption: the
  scheduler counts it per class and the victim's trace shows a preempt span and a second queue span.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.client import GatewayClient
from gateway.config import GatewayConfig
from gateway.server import start_gateway
from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime import tracing
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.runtime.server import ServiceServer
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker
from worker_svc.step_phases import STEP_PHASES

pytestmark = pytest.mark.asyncio(loop_scope="module")

WORKER_ID = "w0"
NUM_KV_BLOCKS = 8  # x 16 tokens: two 70-token requests cannot both hold their KV
GENERATE = "/llmserve.v1.Gateway/Generate"
SUBMIT = "/llmserve.v1.Scheduler/Submit"
S = tracing.SpanNames


@dataclass
class Stack:
    exporter: InMemorySpanExporter
    gateway: ServiceServer
    metrics: dict[str, ServiceMetrics]  # by service

    def sample(self, service: str, name: str, labels: dict[str, str]) -> float:
        return self.metrics[service].registry.get_sample_value(name, labels) or 0.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    # Before any server starts: the interceptors bind to the provider present at start.
    exporter = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    from llmserve.model_source import load_tokenizer, resolve_model

    metrics = {name: ServiceMetrics.create(name) for name in ("gateway", "scheduler", "worker", "kvstore")}
    servers: list[ServiceServer] = []
    try:
        loading = asyncio.create_task(asyncio.to_thread(load_tokenizer, resolve_model("default")))
        kvstore = await start_kvstore(KvStoreConfig(), "127.0.0.1:0", metrics=metrics["kvstore"])
        servers.append(kvstore)
        # Sync interval 0: the store hears of each step's leases right after it, so even this short
        # request's blocks reach the store (and its lease span the trace) while it runs.
        worker_config = WorkerConfig(model="default", load_format="dummy", warmup=False, kvstore_addr=kvstore.address,
                                     worker_id=WORKER_ID, num_kv_blocks=NUM_KV_BLOCKS, block_size=16,
                                     max_num_batched_tokens=256, max_num_seqs=8, device="cpu", dtype="float32",
                                     kv_sync_interval_s=0.0)
        servers.append(await start_worker(worker_config, "127.0.0.1:0", metrics=metrics["worker"]))
        scheduler_config = SchedulerServiceConfig(worker_addrs=(servers[-1].address,), kvstore_addr=kvstore.address)
        servers.append(await start_scheduler(scheduler_config, "127.0.0.1:0", metrics=metrics["scheduler"]))
        gateway = await start_gateway(GatewayConfig(scheduler_addr=servers[-1].address, http_address=""), "127.0.0.1:0",
                                      metrics=metrics["gateway"], tokenizer=await loading)
        servers.append(gateway)
        yield Stack(exporter, gateway, metrics)
    finally:
        for server in reversed(servers):
            await server.stop(0)


async def generate(stack: Stack, prompt: str | list[int], **options: object) -> list[int]:
    async with GatewayClient(stack.gateway.address) as client:
        return [t async for r in client.generate(prompt, timeout_s=120, **options) for t in r.token_ids]


async def trace_of(stack: Stack, request_id: str) -> list[ReadableSpan]:
    """Every finished span of the request's trace (found by its scheduler queue span), once its
    Generate server span has ended (just after the client read the last response)."""
    for _ in range(100):
        finished = stack.exporter.get_finished_spans()
        trace_ids = {s.context.trace_id for s in finished
                     if s.name == S.QUEUE and s.attributes.get(tracing.Attr.REQUEST_ID) == request_id}
        assert len(trace_ids) <= 1, f"{request_id} is in {len(trace_ids)} traces"
        spans = [s for s in finished if s.context.trace_id in trace_ids]
        if any(s.name == GENERATE and s.kind == SpanKind.SERVER for s in spans):
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"no finished Generate span in the trace of {request_id}")


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_one_request_is_one_trace_across_four_services(stack: Stack) -> None:
    rt_before = stack.sample("gateway", "llmserve_ttft_seconds_count", {"service_class": "real_time"})
    be_before = stack.sample("gateway", "llmserve_ttft_seconds_count", {"service_class": "best_effort"})
    worker_steps_before = stack.sample("worker", "llmserve_step_seconds_count", {"worker": WORKER_ID})
    tokens = await generate(stack, "The capital of France is", request_id="rt-trace-1", max_tokens=4, temperature=0.0,
                            ignore_eos=True, service_class="real_time", ttft_ms=60_000, tpot_ms=10_000)
    assert len(tokens) == 4

    spans = await trace_of(stack, "rt-trace-1")
    names = {s.name for s in spans}
    # gateway, scheduler, worker and kvstore spans, in one trace
    assert {GENERATE, S.VALIDATE, SUBMIT, S.QUEUE, S.DECODE, S.PREFILL_CHUNK, S.LEASE} <= names, sorted(names)
    submit_server = next(s for s in named(spans, SUBMIT) if s.kind == SpanKind.SERVER)
    for phase in (S.QUEUE, S.DECODE):
        (span,) = named(spans, phase)
        assert span.parent is not None and span.parent.span_id == submit_server.context.span_id
        assert span.attributes[tracing.Attr.REQUEST_ID] == "rt-trace-1"
        assert span.attributes[tracing.Attr.SERVICE_CLASS] == "real_time"
        assert span.attributes[tracing.Attr.SLO_TTFT_MS] == 60_000.0
        assert span.attributes[tracing.Attr.SLO_TPOT_MS] == 10_000.0
    (queue,), (decode,) = named(spans, S.QUEUE), named(spans, S.DECODE)
    assert queue.end_time <= decode.start_time and decode.attributes[tracing.Attr.FINISH_REASON] == "length"
    assert not named(spans, S.PREEMPT)

    chunks = named(spans, S.PREFILL_CHUNK)
    prompt_tokens = sum(c.attributes[tracing.Attr.NUM_TOKENS] for c in chunks)
    assert chunks[0].attributes[tracing.Attr.NUM_COMPUTED_TOKENS] == 0 and prompt_tokens >= 2
    assert all(c.attributes[tracing.Attr.SERVICE_CLASS] == "real_time" for c in chunks)
    # The step that ran the chunk is a root of its own trace, linked to the request's trace.
    steps = {s.context.span_id: s for s in stack.exporter.get_finished_spans() if s.name == S.STEP}
    step = steps[chunks[0].links[0].context.span_id]
    assert step.parent is None and step.context.trace_id != queue.context.trace_id
    assert any(link.context.trace_id == queue.context.trace_id for link in step.links)
    assert step.attributes[tracing.Attr.WORKER_ID] == WORKER_ID
    lease = named(spans, S.LEASE)[0]
    assert lease.attributes[tracing.Attr.REQUEST_ID] == "rt-trace-1" and lease.attributes[tracing.Attr.NUM_BLOCKS] >= 1

    # Metrics: the request is counted in its class only.
    assert stack.sample("gateway", "llmserve_ttft_seconds_count", {"service_class": "real_time"}) == rt_before + 1
    assert stack.sample("gateway", "llmserve_ttft_seconds_count", {"service_class": "best_effort"}) == be_before
    assert stack.sample("gateway", "llmserve_requests_total", {"service_class": "real_time", "finish_reason": "length"}) >= 1
    assert stack.sample("worker", "llmserve_step_seconds_count", {"worker": WORKER_ID}) >= worker_steps_before + 4
    # The steps' time by phase adds up to their wall time (forward the largest part of it).
    phases = {p: stack.sample("worker", "llmserve_step_phase_seconds_total", {"worker": WORKER_ID, "phase": p})
              for p in STEP_PHASES}
    step_sum = stack.sample("worker", "llmserve_step_seconds_sum", {"worker": WORKER_ID})
    assert phases["forward"] > 0 and max(phases.values()) == phases["forward"], phases
    assert sum(phases.values()) == pytest.approx(step_sum, rel=1e-6), (phases, step_sum)
    assert stack.sample("scheduler", "llmserve_step_seconds_count", {"worker": WORKER_ID}) >= 4
    assert stack.sample("scheduler", "llmserve_tokens_per_step_count", {"worker": WORKER_ID, "phase": "prefill"}) >= 1
    assert stack.sample("scheduler", "llmserve_tokens_per_step_count", {"worker": WORKER_ID, "phase": "decode"}) >= 3
    # Gauges are published every second from the scheduler's core: wait for a publication made
    # after the request released its blocks.
    gauges = {
        ("llmserve_kv_blocks_total", (("worker", WORKER_ID),)): NUM_KV_BLOCKS,
        ("llmserve_kv_blocks_used", (("worker", WORKER_ID), ("service_class", "real_time"))): 0,
        ("llmserve_queue_length", (("worker", WORKER_ID), ("service_class", "real_time"))): 0,
    }
    get = stack.metrics["scheduler"].registry.get_sample_value

    def published() -> dict:
        return {key: get(key[0], dict(key[1])) for key in gauges}

    for _ in range(30):
        if published() == gauges:
            break
        await asyncio.sleep(0.1)
    assert published() == gauges


async def test_a_preemption_shows_in_the_victims_trace_and_the_metrics(stack: Stack) -> None:
    # Each request ends at 10 + 60 = 70 tokens (5 blocks of 16); two need 10 of the 8 blocks.
    prompt = list(range(100, 110))
    options = dict(max_tokens=60, temperature=0.0, ignore_eos=True, service_class="best_effort")
    before = stack.sample("scheduler", "llmserve_preemptions_total", {"service_class": "best_effort", "kind": "recompute"})
    first = asyncio.create_task(generate(stack, prompt, request_id="be-1", **options))
    await asyncio.sleep(0.2)  # fcfs: be-1 ranks first, so be-2 is the victim
    second = asyncio.create_task(generate(stack, prompt, request_id="be-2", **options))
    outputs = await asyncio.gather(first, second)
    assert [len(o) for o in outputs] == [60, 60]
    assert outputs[0] == outputs[1]  # greedy, same prompt: recomputation changed nothing

    assert stack.sample("scheduler", "llmserve_preemptions_total", {"service_class": "best_effort", "kind": "recompute"}) >= before + 1
    assert stack.sample("scheduler", "llmserve_preemptions_total", {"service_class": "real_time", "kind": "recompute"}) == 0
    victim = await trace_of(stack, "be-2")
    preempts = named(victim, S.PREEMPT)
    assert preempts and preempts[0].attributes[tracing.Attr.PREEMPT_KIND] == "recompute"
    assert preempts[0].attributes[tracing.Attr.SERVICE_CLASS] == "best_effort"
    queues = sorted(named(victim, S.QUEUE), key=lambda s: s.start_time)
    decodes = sorted(named(victim, S.DECODE), key=lambda s: s.start_time)
    assert len(queues) == len(preempts) + 1  # queued at Submit, and again after each preemption
    assert decodes[0].attributes[tracing.Attr.FINISH_REASON] == "preempted"
    assert decodes[-1].attributes[tracing.Attr.FINISH_REASON] == "length"
    assert queues[1].start_time >= preempts[0].start_time
    # The worker re-prefilled the victim's known tokens after re-admission: a chunk starting at 0
    # in a later step than its first.
    restarts = [c for c in named(victim, S.PREFILL_CHUNK) if c.attributes[tracing.Attr.NUM_COMPUTED_TOKENS] == 0]
    assert len(restarts) == len(preempts) + 1
    assert not named(await trace_of(stack, "be-1"), S.PREEMPT)
