"""A request's token events from the scheduler, carried across scheduler restarts.

`SchedulerUpstream.token_events` is one `Scheduler.Submit` stream as long as the scheduler lives.
When the stream breaks because the scheduler went away (UNAVAILABLE, or a CANCELLED that the
gateway did not ask for: a process that died or stopped), it waits until the scheduler reports
SERVING again and submits the request again with the output tokens already received
(`SubmitRequest.output_token_ids`), so the request continues exactly where its client's stream is:
output token i is still sampled with draw index i (greedy output is identical, seeded sampling
too). The client sees a pause, not an error.

The wait is bounded: a request that gets no token for `outage_s` after its stream broke fails with
the scheduler's last status (UNAVAILABLE), which the client may retry. A first Submit that finds
the scheduler unavailable (restarting, draining, no healthy worker) waits the same way. Every
waiting request shares one health poll of the scheduler (`_ReadinessProbe`), so a restart costs
one Check per poll period, not one per request.

Cancelling: `SubmitHandle.cancel()` (the Cancel RPC) cancels the current call, and a wait for the
scheduler too, so the iteration raises CancelledError as it does for any cancelled call and no
resubmit follows. Closing the iterator cancels the call, which aborts the request at the
scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from gateway import convert
from gateway.core.types import FinishReason, PreparedRequest
from llmserve.runtime.errors import LlmServeError, error_for_rpc_error

if TYPE_CHECKING:
    from llmserve.v1 import scheduler_pb2_grpc

logger = logging.getLogger(__name__)

# One token event: the new token ids, the finish reason (NONE until the last), the error message.
TokenEvent = tuple[Sequence[int], FinishReason, str]

# Statuses of a broken Submit that mean "the scheduler is gone or not ready": resubmit. grpc.aio
# raises CancelledError (not a status) for the gateway's own cancel, so a CANCELLED status is the
# peer's (its server stopped).
_SCHEDULER_GONE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True)
class ResubmitPolicy:
    """How long and how often a request tries to reach a lost scheduler again."""

    outage_s: float = 60.0  # the longest wait without a token; 0: never resubmit
    first_backoff_s: float = 0.05  # before the first retry; doubles per retry of one outage
    max_backoff_s: float = 1.0
    poll_s: float = 0.2  # health checks of the shared probe


class SubmitHandle:
    """The current Submit call of one request, for whoever must end it (the Cancel RPC)."""

    def __init__(self) -> None:
        self.call: Any = None  # the open grpc.aio.UnaryStreamCall, once submitted
        self.num_cached_tokens = 0  # prompt tokens the prefix cache served, from the last event
        self._cancelled = asyncio.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ends the request upstream for good: the current call is cancelled (the scheduler
        aborts it) and no resubmit follows."""
        self._cancelled.set()
        if self.call is not None:
            self.call.cancel()

    async def wait_cancelled(self) -> None:
        await self._cancelled.wait()


class SchedulerUpstream:
    """The gateway's Submit calls. `is_serving(timeout_s)` checks the scheduler's health."""

    def __init__(
        self,
        stub: scheduler_pb2_grpc.SchedulerStub,
        is_serving: Callable[[float], Awaitable[bool]],
        policy: ResubmitPolicy = ResubmitPolicy(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stub = stub
        self.policy = policy
        self.clock = clock
        self.num_resubmits = 0  # Submit calls after a broken or refused one, since start
        self._probe = _ReadinessProbe(is_serving, policy.poll_s, clock)
        self._rng = random.Random()

    async def token_events(self, request: PreparedRequest, handle: SubmitHandle) -> AsyncIterator[TokenEvent]:
        """The request's token events in order, across scheduler restarts; ends after the event
        with a finish reason (or when the scheduler ends the stream without one). Raises the
        scheduler's AioRpcError for any other failure, or once an outage outlasts the policy;
        CancelledError once `handle` is cancelled."""
        outputs: list[int] = []
        outage_since: float | None = None  # when the current outage began (None: none)
        retries = 0  # of the current outage
        while True:
            if handle.cancelled:
                raise asyncio.CancelledError
            handle.call = call = self.stub.Submit(convert.submit_to_pb(request, outputs))
            try:
                async for event in call:
                    token_ids, finish_reason, error_message = convert.token_event_from_pb(event)
                    if finish_reason:
                        handle.num_cached_tokens = convert.cached_tokens_from_pb(event)
                    outputs.extend(token_ids)
                    outage_since, retries = None, 0
                    yield token_ids, finish_reason, error_message
                return
            except grpc.aio.AioRpcError as err:
                now = self.clock()
                outage_since = now if outage_since is None else outage_since
                deadline = outage_since + self.policy.outage_s
                if not self._retryable(err, resubmit=bool(outputs) or retries > 0) or now >= deadline:
                    raise
                logger.debug("Submit of %s broke (%s): resubmitting with %d tokens", request.request_id,
                             err.code().name, len(outputs))
                if not await self._until_cancelled(handle, self._wait_for_scheduler(retries, deadline)):
                    raise
                retries += 1
                self.num_resubmits += 1
            finally:
                if not call.done():
                    call.cancel()  # the caller stopped reading (stop string, client gone): abort

    @staticmethod
    def _retryable(err: grpc.aio.AioRpcError, resubmit: bool) -> bool:
        """The scheduler is gone or not ready; or, for a resubmit, its previous stream of this
        request is still open there (ALREADY_EXISTS until it notices the break)."""
        code = err.code()
        return code in _SCHEDULER_GONE or (resubmit and code == grpc.StatusCode.ALREADY_EXISTS)

    async def _wait_for_scheduler(self, retries: int, deadline: float) -> bool:
        """A backoff (exponential, with jitter so that the requests of one outage do not retry in
        lockstep), then until the scheduler is SERVING; False if that is not before `deadline`."""
        policy = self.policy
        delay = min(policy.max_backoff_s, policy.first_backoff_s * 2 ** retries) * (0.5 + self._rng.random())
        await asyncio.sleep(max(0.0, min(deadline - self.clock(), delay)))
        return await self._probe.wait(deadline - self.clock())

    @staticmethod
    async def _until_cancelled(handle: SubmitHandle, wait: Awaitable[bool]) -> bool:
        """`wait`'s result, unless `handle` is cancelled first (then CancelledError)."""
        waiting = asyncio.ensure_future(wait)
        cancelled = asyncio.ensure_future(handle.wait_cancelled())
        try:
            await asyncio.wait({waiting, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, cancelled):
                task.cancel()
            await asyncio.gather(waiting, cancelled, return_exceptions=True)
        if handle.cancelled:
            raise asyncio.CancelledError
        return waiting.result()


class _ReadinessProbe:
    """One health poll of the scheduler, shared by every request waiting for it to come back; it
    runs while someone waits and ends once the scheduler is SERVING. A SERVING seen less than a
    poll period ago answers at once (a scheduler that serves but has no worker yet refuses
    Submit: its requests retry without a Check each)."""

    def __init__(self, is_serving: Callable[[float], Awaitable[bool]], poll_s: float,
                 clock: Callable[[], float]) -> None:
        self._is_serving = is_serving
        self._poll_s = poll_s
        self._clock = clock
        self._task: asyncio.Task[bool] | None = None
        self._waiters = 0
        self._serving_at = -float("inf")

    async def wait(self, timeout_s: float) -> bool:
        """True once the scheduler is SERVING; False after `timeout_s` without."""
        if timeout_s <= 0:
            return False
        if self._clock() - self._serving_at < self._poll_s:
            return True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="scheduler-readiness")
        task = self._task
        self._waiters += 1
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        finally:
            self._waiters -= 1
        return bool(done) and not task.cancelled() and task.exception() is None and task.result()

    async def _poll(self) -> bool:
        started = self._clock()
        logged = False
        while True:
            if await self._is_serving(max(self._poll_s, 1.0)):
                self._serving_at = self._clock()
                if logged:
                    logger.warning("the scheduler is serving again after %.1fs: resubmitting", self._clock() - started)
                return True
            if not logged:
                logger.warning("the scheduler is unavailable: requests wait for it and resubmit with their tokens")
                logged = True
            if self._waiters == 0:
                return False  # nobody waits any more (they gave up or left)
            await asyncio.sleep(self._poll_s)


def scheduler_error(err: grpc.aio.AioRpcError) -> LlmServeError:
    """The scheduler's status as this client's (RESOURCE_EXHAUSTED, UNAVAILABLE, ...; CANCELLED, the
    scheduler gone, is UNAVAILABLE), its message marked as the scheduler's. A RESOURCE_EXHAUSTED
    keeps the scheduler's own retry-after (e.g. admission control's predicted overrun), else a full
    queue is worth a retry after a second."""
    error = error_for_rpc_error(err, f"scheduler: {err.details() or err.code().name}")
    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not getattr(error, "retry_after_s", None):
        error.retry_after_s = 1.0  # type: ignore[attr-defined]
    return error
