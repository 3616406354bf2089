"""The worker's tracing of a step: the step's span and one span per prefill chunk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.trace import Link

from llmserve.plan import BatchPlan
from llmserve.runtime import tracing
from llmserve.runtime.metrics import class_label
from llmserve.types import is_decode
from worker_svc.core.runner import StepRunner


@contextlib.contextmanager
def traced_step(runner: StepRunner, worker_id: str, plan: BatchPlan) -> Iterator[None]:
    """Around the Apply and the forward pass of a begun step: the step's span (its own trace,
    linked to every traced request it serves; current, so the Apply is its child) and one
    `worker.prefill_chunk` span per prefill chunk, in that request's trace, linked to the step.
    Free while tracing is off."""
    if not tracing.tracing_active():
        yield
        return
    traced = []  # (scheduled item, its state, its extracted context)
    for item in plan.scheduled:
        state = runner.state(item.request_id)
        if state.trace_context:
            traced.append((item, state, tracing.extract_context(dict(state.trace_context))))
    attrs = {tracing.Attr.WORKER_ID: worker_id, tracing.Attr.NUM_REQUESTS: len(plan.scheduled),
             tracing.Attr.NUM_TOKENS: sum(item.num_tokens for item in plan.scheduled)}
    with tracing.step_span(plan.step_id, [ctx for _, _, ctx in traced], attrs) as step:
        links = [Link(step.get_span_context())]
        chunks = []
        for item, state, ctx in traced:
            if is_decode(item.num_computed_tokens, item.num_tokens, state.num_prompt_tokens):
                continue
            chunk_attrs = {
                **tracing.request_attributes(item.request_id, class_label(int(state.service_class))),
                tracing.Attr.WORKER_ID: worker_id, tracing.Attr.STEP_ID: plan.step_id,
                tracing.Attr.NUM_TOKENS: item.num_tokens, tracing.Attr.NUM_COMPUTED_TOKENS: item.num_computed_tokens,
            }
            chunks.append(tracing.start_request_span(tracing.SpanNames.PREFILL_CHUNK, chunk_attrs, context=ctx, links=links))
        try:
            yield
        finally:
            for span in chunks:
                span.end()
