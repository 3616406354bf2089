"""One admitted request's stream (`Generation`): the scheduler's token events in, text deltas out.

It consumes `Scheduler.Submit` through `gateway.upstream` (which resubmits across a scheduler
restart), detokenizes (inline for the few tokens of a usual event, on the tokenizer pool for a
backlog), holds back stop strings (`gateway.core.stream`), and on leaving early (the client gone,
a Cancel) cancels the Submit call so that the scheduler aborts the request. `Lifecycle.start`
makes it; both fronts iterate it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from gateway.core.registry import Key
from gateway.core.stream import OutputStream
from gateway.core.types import Delta, FinishReason, PreparedRequest, Slo
from gateway.upstream import SubmitHandle, scheduler_error
from llmserve.runtime.errors import LlmServeError
from llmserve.runtime.tracing import Attr, SpanNames, request_attributes, start_request_span

if TYPE_CHECKING:
    from gateway.lifecycle import Lifecycle

# Events with more tokens than this are detokenized on the pool (a resumed stream's backlog).
INLINE_DETOKENIZE_TOKENS = 32


@dataclass(slots=True)
class Running:
    """A request between admission and its last delta."""

    call: SubmitHandle | None = None  # its Scheduler.Submit call, across scheduler restarts
    cancel_requested: bool = False
    finished: bool = False


class Generation:
    """One admitted request: iterate `deltas()` once. Leaving the iteration early (a stop on the
    client's side, a disconnect) cancels the request upstream and frees its KV within one step."""

    def __init__(self, lifecycle: Lifecycle, prepared: PreparedRequest, client_request_id: str, key: Key,
                 running: Running, arrival_s: float) -> None:
        self.lifecycle = lifecycle
        self.prepared = prepared
        self.request_id = client_request_id  # what the client sees (the scheduler's may carry a tenant tag)
        self.key = key
        self.running = running
        self.arrival_s = arrival_s
        self._started = False
        self._closed = False

    @property
    def slo(self) -> Slo:
        return self.prepared.slo

    def close(self) -> None:
        """Gives back a generation whose deltas were never iterated (its front failed or its
        client left before the stream began); a no-op once `deltas()` started."""
        if not self._started and not self._closed:
            self._closed = True
            self.lifecycle.release(self)
            self.lifecycle.quotas.finish(self.prepared.tenant, 0, self.lifecycle.clock())

    async def deltas(self) -> AsyncIterator[Delta]:
        """Text deltas; the last one is finished (STOP, LENGTH, CANCELLED by a Cancel call) and
        carries usage. A failure raises its domain error (the scheduler's status, or INTERNAL with
        the scheduler's reason) after the partial output was yielded."""
        if self._started or self._closed:
            raise RuntimeError("a generation's deltas are iterated once")
        self._started = True
        try:
            async for delta in self._deltas():
                yield delta
        finally:
            self.lifecycle.release(self)

    async def _deltas(self) -> AsyncIterator[Delta]:
        life, prepared, running = self.lifecycle, self.prepared, self.running
        model = life.model
        assert model is not None
        clock = life.clock
        out = OutputStream.start(prepared, model.tokenizer, self.arrival_s)
        slo = prepared.slo
        span = start_request_span(
            SpanNames.DETOKENIZE,
            request_attributes(prepared.request_id, slo.service_class.name.lower(), ttft_ms=slo.ttft_ms,
                               tpot_ms=slo.tpot_ms, deadline_ms=slo.deadline_ms, priority=slo.priority),
        )
        final: Delta | None = None
        upstream_error: grpc.aio.AioRpcError | None = None
        # The one place that consumes Scheduler.Submit (gateway.upstream: it resubmits across a
        # scheduler restart). Leaving early cancels the call: the scheduler aborts the request.
        running.call = handle = SubmitHandle()
        events = life.upstream.token_events(prepared, handle)
        try:
            try:
                async for token_ids, finish_reason, error_message in events:
                    if finish_reason:  # the last event: the prefix cache's share of the prompt
                        out.usage.cached_prompt_tokens = handle.num_cached_tokens
                    if len(token_ids) > INLINE_DETOKENIZE_TOKENS:
                        delta = await life.off_loop(out.on_tokens, tuple(token_ids), finish_reason, clock(),
                                                    error_message)
                    else:
                        delta = out.on_tokens(token_ids, finish_reason, clock(), error_message)
                    if delta.finished:
                        final = delta
                        break
                    if delta.text or delta.token_ids:
                        yield delta
                if final is None:
                    final = out.fail(clock(), "the scheduler ended the stream without a finish reason")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                # Our own Cancel cancelled the Submit call; a cancelled task is the client leaving.
                if not running.cancel_requested or (task is not None and task.cancelling()):
                    raise
                final = out.cancel(clock())
            except grpc.aio.AioRpcError as err:
                upstream_error = err
                final = out.fail(clock(), err.details() or err.code().name)
            running.finished = True
            if upstream_error is None:
                yield final
        finally:
            await events.aclose()  # cancels the Submit call unless it finished: the scheduler aborts
            if final is None:
                final = out.cancel(clock())  # the client went away mid-stream
            life.record(self, final)
            span.set_attribute(Attr.FINISH_REASON, final.finish_reason.name.lower())
            span.end()
        if upstream_error is not None:
            raise scheduler_error(upstream_error)
        if final.finish_reason == FinishReason.ERROR:
            raise LlmServeError(final.error_message or "the request failed")  # INTERNAL, with the scheduler's reason
