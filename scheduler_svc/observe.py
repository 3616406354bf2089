"""Tracing and metrics of the scheduler service, observed from the shell so the core stays pure.

The core is never asked to report: this module watches what the shell already handles (the plans
it sends, the outputs and step results it receives, the core's `stats()`).

Spans, per request, all children of the request's `Submit` server span (whose W3C context,
captured in `Submit`, also travels to the worker in `NewRequest.trace_context`):
- `scheduler.queue`: from Submit, and again from each preemption or re-route, until a sent plan
  first schedules the request;
- `scheduler.decode`: from the first token after (re)scheduling to the finish, or to the next
  preemption;
- `scheduler.preempt`: an event-length span when a sent plan lists the request as preempted and
  the core counted it (a request whose step failed is re-queued too, without a preempt span).

Metrics (`ServiceMetrics`, labels in brackets): `preemptions_total[service_class, kind]` (kind:
`checkpoint` when the plan has the worker save the KV to the host tier, else `recompute`),
`running_batch_size[worker]` (requests in the last sent plan), `step_seconds[worker]` and
`tokens_per_step[worker, phase]` (the worker's StepTiming), and, every `publish()`,
`queue_length[worker, service_class]` and `kv_blocks_used/total[worker, service_class]`.

Not thread-safe: every method runs on the event loop, as the cores do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, Status, StatusCode

from llmserve.runtime import tracing
from llmserve.runtime.metrics import SERVICE_CLASSES, ServiceMetrics, class_label
from scheduler_svc.core.plan import BatchPlan, RequestOutput, StepTiming
from scheduler_svc.core.request import FinishReason, Request
from scheduler_svc.core.scheduler import Scheduler

@dataclass(slots=True)
class _Tracked:
    """What the observer keeps per open request."""

    service_class: str  # metrics label
    num_preemptions: int  # the core's count when last seen: a rise means a counted preemption
    carrier: dict[str, str] = field(default_factory=dict)  # empty while tracing is off
    context: otel_context.Context | None = None  # parent of the phase spans (None: untraced)
    attributes: dict[str, str | float | int] = field(default_factory=dict)
    queue: Span | None = None
    decode: Span | None = None


class SchedulerObserver:
    """Spans and metrics of one scheduler service (shared by its worker links)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self._requests: dict[str, _Tracked] = {}
        self._carriers: dict[str, dict[str, str]] = {}

    @property
    def carriers(self) -> Mapping[str, Mapping[str, str]]:
        """request_id -> W3C trace context of its Submit span, for `convert.plan_to_proto`."""
        return self._carriers

    # ---- request lifecycle (the service) ---------------------------------------------------------
    def open_request(self, request: Request) -> None:
        """Call in `Submit`, while its server span is current: captures the request's trace
        context and starts its queue span."""
        tracked = _Tracked(class_label(request.service_class.name), request.num_preemptions)
        self._requests[request.request_id] = tracked
        if not tracing.tracing_active():
            return
        carrier = tracing.inject_context()
        if not carrier:
            return  # no Submit span to continue (e.g. the interceptors are not installed)
        slo = request.slo
        tracked.carrier = carrier
        tracked.context = otel_context.get_current()
        tracked.attributes = tracing.request_attributes(
            request.request_id, tracked.service_class, ttft_ms=slo.ttft_ms, tpot_ms=slo.tpot_ms,
            deadline_ms=slo.deadline_ms, priority=slo.priority,
        )
        self._carriers[request.request_id] = carrier
        self._start_queue(tracked)

    def requeued(self, request_id: str) -> None:
        """The request went back to a queue outside a plan (re-routed from a failed worker)."""
        tracked = self._requests.get(request_id)
        if tracked is not None and tracked.context is not None:
            self._end_decode(tracked)
            if tracked.queue is None:
                self._start_queue(tracked)

    def close_request(self, request_id: str, finish_reason: str = "cancelled") -> None:
        """The request's Submit call is over (normally after its final output; on a cancelled
        call, before): ends whatever span is still open."""
        tracked = self._requests.pop(request_id, None)
        self._carriers.pop(request_id, None)
        if tracked is None:
            return
        for span in (tracked.queue, tracked.decode):
            if span is not None:
                span.set_attribute(tracing.Attr.FINISH_REASON, finish_reason)
                span.end()
        tracked.queue = tracked.decode = None

    # ---- the worker links ------------------------------------------------------------------------
    def plan_sent(self, worker: str, plan: BatchPlan, core: Scheduler) -> None:
        """A plan went to `worker`: preemptions it announces, and the queue spans it ends."""
        self.metrics.running_batch_size.labels(worker).set(len(plan.scheduled))
        if plan.preempted_request_ids:
            checkpointed = set(plan.checkpoint_request_ids)
            for request_id in plan.preempted_request_ids:
                self._preempted(request_id, "checkpoint" if request_id in checkpointed else "recompute", core)
        if not self._carriers:
            return  # nothing traced: skip the per-request walk
        for item in plan.scheduled:
            tracked = self._requests.get(item.request_id)
            if tracked is not None and tracked.queue is not None:
                tracked.queue.end()
                tracked.queue = None

    def outputs(self, outputs: list[RequestOutput]) -> None:
        """Token events on their way to the Submit calls: decode spans start and end here."""
        if not self._carriers:
            return
        for output in outputs:
            tracked = self._requests.get(output.request_id)
            if tracked is None or tracked.context is None:
                continue
            if output.new_token_ids and tracked.decode is None:
                tracked.decode = tracing.start_request_span(tracing.SpanNames.DECODE, tracked.attributes, context=tracked.context)
            if output.finish_reason is not None and tracked.decode is not None:
                tracked.decode.set_attribute(tracing.Attr.FINISH_REASON, output.finish_reason.name.lower())
                if output.finish_reason is FinishReason.ERROR:
                    tracked.decode.set_status(Status(StatusCode.ERROR, output.error_message))
                tracked.decode.end()
                tracked.decode = None

    def step_done(self, worker: str, timing: StepTiming | None, batch_size: int) -> None:
        """A step's result came back from `worker` (its timing, as the worker measured it)."""
        if timing is None:
            return
        self.metrics.observe_step(worker, seconds=timing.total_ns / 1e9, prefill_tokens=timing.num_prefill_tokens,
                                  decode_tokens=timing.num_decode_seqs, batch_size=batch_size)

    def publish(self, worker: str, core: Scheduler) -> None:
        """Sets `worker`'s queue-length and KV-block gauges from its core (call periodically: it
        walks the waiting queue)."""
        lengths = dict.fromkeys(SERVICE_CLASSES, 0)
        for request in core.waiting_requests():
            lengths[class_label(request.service_class.name)] += 1
        self.metrics.set_queue_lengths(worker, lengths)
        used = {class_label(cls.name): n for cls, n in core.stats().kv_blocks_by_class.items()}
        self.metrics.set_kv_blocks(worker, used, core.config.num_blocks)

    # ---- internals -------------------------------------------------------------------------------
    def _preempted(self, request_id: str, kind: str, core: Scheduler) -> None:
        tracked = self._requests.get(request_id)
        request = core.get_request(request_id)
        if tracked is None or request is None:
            return
        counted = request.num_preemptions > tracked.num_preemptions
        tracked.num_preemptions = request.num_preemptions
        if counted:
            self.metrics.preemptions_total.labels(tracked.service_class, kind).inc()
        if tracked.context is None:
            return
        self._end_decode(tracked)
        if counted:
            attrs = {**tracked.attributes, tracing.Attr.PREEMPT_KIND: kind,
                     tracing.Attr.NUM_TOKENS: request.num_tokens}  # to recompute
            tracing.start_request_span(tracing.SpanNames.PREEMPT, attrs, context=tracked.context).end()
        if tracked.queue is None:
            self._start_queue(tracked)

    @staticmethod
    def _start_queue(tracked: _Tracked) -> None:
        tracked.queue = tracing.start_request_span(tracing.SpanNames.QUEUE, tracked.attributes, context=tracked.context)

    @staticmethod
    def _end_decode(tracked: _Tracked) -> None:
        if tracked.decode is not None:
            tracked.decode.set_attribute(tracing.Attr.FINISH_REASON, "preempted")
            tracked.decode.end()
            tracked.decode = None
