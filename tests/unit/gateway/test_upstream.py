"""gateway/upstream.py against a scripted Scheduler stub: a stream that breaks because the
scheduler went away is resubmitted with the tokens already received and continues; other
failures, and outages longer than the policy, end it with the scheduler's status; a Cancel while
waiting ends it at once; every waiting request shares one health poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from gateway.core.types import FinishReason, PreparedRequest, Sampling, ServiceClass, Slo
from gateway.upstream import ResubmitPolicy, SchedulerUpstream, SubmitHandle
from llmserve.v1 import common_pb2, scheduler_pb2

FAST = ResubmitPolicy(outage_s=5.0, first_backoff_s=0.001, max_backoff_s=0.01, poll_s=0.01)


def _request(request_id: str = "r1") -> PreparedRequest:
    return PreparedRequest(request_id, (1, 2, 3), Sampling(8, 0.0, 1.0, 0, 7, (), (), True),
                           Slo(ServiceClass.BEST_EFFORT), "", None, 1.0)


def _error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _event(*tokens: int, finish: int = common_pb2.FINISH_REASON_UNSPECIFIED) -> scheduler_pb2.TokenEvent:
    return scheduler_pb2.TokenEvent(request_id="r1", token_ids=tokens, finish_reason=finish)


@dataclass
class _Call:
    """A Submit call that yields `events`, then raises `error` (if any)."""

    events: list[scheduler_pb2.TokenEvent]
    error: grpc.aio.AioRpcError | None = None
    hang: bool = False  # after the events, wait until cancelled
    cancelled: bool = False
    finished: bool = False

    def done(self) -> bool:
        return self.finished or self.cancelled

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def _iterate(self) -> AsyncIterator[scheduler_pb2.TokenEvent]:
        for event in self.events:
            if self.cancelled:
                raise asyncio.CancelledError
            yield event
        while self.hang and not self.cancelled:
            await asyncio.sleep(0.005)
        if self.cancelled:
            raise asyncio.CancelledError
        self.finished = True
        if self.error is not None:
            raise self.error

    def __aiter__(self) -> AsyncIterator[scheduler_pb2.TokenEvent]:
        return self._iterate()


@dataclass
class _Stub:
    calls: list[_Call]
    submitted: list[scheduler_pb2.SubmitRequest] = field(default_factory=list)

    def Submit(self, message: scheduler_pb2.SubmitRequest) -> _Call:  # noqa: N802 (the stub's name)
        self.submitted.append(message)
        return self.calls.pop(0)


class _Health:
    def __init__(self, serving_after: int = 0) -> None:
        self.checks = 0
        self.serving_after = serving_after

    async def __call__(self, timeout_s: float) -> bool:
        self.checks += 1
        await asyncio.sleep(0.001)
        return self.checks > self.serving_after


async def _collect(upstream: SchedulerUpstream, handle: SubmitHandle | None = None,
                   request: PreparedRequest | None = None) -> list[tuple[tuple[int, ...], FinishReason]]:
    return [(tuple(ids), reason) async for ids, reason, _ in upstream.token_events(request or _request(),
                                                                                     handle or SubmitHandle())]


async def test_a_broken_stream_is_resubmitted_with_the_tokens_received() -> None:
    stub = _Stub([_Call([_event(5), _event(6)], _error(grpc.StatusCode.UNAVAILABLE, "Socket closed")),
                  _Call([], _error(grpc.StatusCode.UNAVAILABLE, "connection refused")),
                  _Call([_event(7), _event(8, finish=common_pb2.FINISH_REASON_LENGTH)])])
    health = _Health(serving_after=2)
    upstream = SchedulerUpstream(stub, health, FAST)  # type: ignore[arg-type]
    events = await _collect(upstream)
    assert events == [((5,), FinishReason.NONE), ((6,), FinishReason.NONE), ((7,), FinishReason.NONE),
                      ((8,), FinishReason.LENGTH)]
    assert [list(m.output_token_ids) for m in stub.submitted] == [[], [5, 6], [5, 6]]
    assert all(list(m.prompt_token_ids) == [1, 2, 3] and m.request_id == "r1" for m in stub.submitted)
    assert upstream.num_resubmits == 2 and health.checks >= 3


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INTERNAL])
async def test_other_failures_of_a_first_submit_end_the_stream(code: grpc.StatusCode) -> None:
    stub = _Stub([_Call([], _error(code, "no"))])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _collect(SchedulerUpstream(stub, _Health(), FAST))  # type: ignore[arg-type]
    assert err.value.code() == code and len(stub.submitted) == 1


async def test_a_resubmit_waits_while_the_old_stream_is_still_known_there() -> None:
    stub = _Stub([_Call([_event(5)], _error(grpc.StatusCode.CANCELLED, "server shutting down")),
                  _Call([], _error(grpc.StatusCode.ALREADY_EXISTS, "request_id 'r1' is already running")),
                  _Call([_event(6, finish=common_pb2.FINISH_REASON_STOP)])])
    events = await _collect(SchedulerUpstream(stub, _Health(), FAST))  # type: ignore[arg-type]
    assert events == [((5,), FinishReason.NONE), ((6,), FinishReason.STOP)]
    assert [list(m.output_token_ids) for m in stub.submitted] == [[], [5], [5]]


async def test_an_outage_longer_than_the_policy_fails_unavailable() -> None:
    stub = _Stub([_Call([_event(5)], _error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))])
    upstream = SchedulerUpstream(stub, _Health(serving_after=10**9),  # type: ignore[arg-type]
                                 ResubmitPolicy(outage_s=0.3, first_backoff_s=0.01, max_backoff_s=0.05, poll_s=0.02))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _collect(upstream)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 0.25 <= loop.time() - started < 3.0 and len(stub.submitted) == 1


async def test_no_resubmit_when_the_policy_allows_no_outage() -> None:
    stub = _Stub([_Call([_event(5)], _error(grpc.StatusCode.UNAVAILABLE))])
    with pytest.raises(grpc.aio.AioRpcError):
        await _collect(SchedulerUpstream(stub, _Health(), ResubmitPolicy(outage_s=0.0)))  # type: ignore[arg-type]
    assert len(stub.submitted) == 1


async def test_a_cancel_while_waiting_for_the_scheduler_ends_the_stream() -> None:
    stub = _Stub([_Call([_event(5)], _error(grpc.StatusCode.UNAVAILABLE))])
    handle = SubmitHandle()
    upstream = SchedulerUpstream(stub, _Health(serving_after=10**9), FAST)  # type: ignore[arg-type]
    collecting = asyncio.create_task(_collect(upstream, handle))
    await asyncio.sleep(0.1)
    assert not collecting.done()
    handle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(collecting, 1.0)
    assert len(stub.submitted) == 1


async def test_closing_the_iterator_cancels_the_open_call() -> None:
    call = _Call([_event(5)], hang=True)
    upstream = SchedulerUpstream(_Stub([call]), _Health(), FAST)  # type: ignore[arg-type]
    events = upstream.token_events(_request(), SubmitHandle())
    assert list((await events.__anext__())[0]) == [5]
    await events.aclose()
    assert call.cancelled


async def test_requests_waiting_for_the_scheduler_share_one_health_poll() -> None:
    n = 30
    stub = _Stub([_Call([_event(5)], _error(grpc.StatusCode.UNAVAILABLE)) for _ in range(n)]
                 + [_Call([_event(6, finish=common_pb2.FINISH_REASON_LENGTH)]) for _ in range(n)])
    health = _Health(serving_after=5)
    upstream = SchedulerUpstream(stub, health, ResubmitPolicy(outage_s=5.0, first_backoff_s=0.001,  # type: ignore[arg-type]
                                                              max_backoff_s=0.001, poll_s=0.02))
    results = await asyncio.gather(*(_collect(upstream, request=_request(f"r{i}")) for i in range(n)))
    assert all(events[-1] == ((6,), FinishReason.LENGTH) for events in results)
    assert health.checks < n  # one poll for all of them, not one per request
