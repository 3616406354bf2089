"""Bytes that do not decode as the method's request, through a real server built by `start_server`
(on 127.0.0.1:0, raw bytes sent on a generic channel with identity serializers), for the four RPC
shapes: INVALID_ARGUMENT saying what was wrong, the handler never sees them (a stream's good
messages before them it does), and the log gets one rate-limited warning line, no error and no
traceback. Every real service, over mTLS: test_transport.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import start_server
from llmserve.runtime.undecodable import RateLimitedWarning
from llmserve.v1 import gateway_pb2

SERVICE = "llmserve.test.Decode"
GOOD = gateway_pb2.CancelRequest(request_id="r1").SerializeToString()
GARBAGE = b"\xff\xff\xff\xff"  # an unterminated varint: no message type decodes it
BAD_UTF8 = b"\x0a\x02\xc3\x28"  # field 1 (request_id, a string) holding invalid UTF-8
REPLY = gateway_pb2.CancelResponse(cancelled=True)


class Seen:
    def __init__(self) -> None:
        self.requests: list[str] = []


def _add(seen: Seen):
    async def unary(request: gateway_pb2.CancelRequest, context: grpc.aio.ServicerContext) -> Any:
        seen.requests.append(request.request_id)
        return REPLY

    async def server_stream(request: gateway_pb2.CancelRequest, context: grpc.aio.ServicerContext) -> AsyncIterator:
        seen.requests.append(request.request_id)
        yield REPLY

    async def client_stream(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> Any:
        async for request in requests:
            seen.requests.append(request.request_id)
        return REPLY

    async def bidi(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> AsyncIterator:
        async for request in requests:
            seen.requests.append(request.request_id)
            yield REPLY

    def add(server: grpc.aio.Server) -> None:
        codec = {"request_deserializer": gateway_pb2.CancelRequest.FromString,
                 "response_serializer": gateway_pb2.CancelResponse.SerializeToString}
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **codec),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **codec),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **codec),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **codec),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return add


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Seen]]:
    seen = Seen()
    running = await start_server(_add(seen), [SERVICE])
    try:
        async with open_channel(running.address) as channel:
            yield channel, seen
    finally:
        await running.stop(0)


async def _call(channel: grpc.aio.Channel, shape: str, payloads: list[bytes]) -> tuple[int, Any]:
    """Sends raw `payloads` (one for a unary request); (replies received, the error or None)."""
    method = f"/{SERVICE}/{shape}"
    replies = 0
    try:
        if shape == "Unary":
            await channel.unary_unary(method)(payloads[0])
            replies = 1
        elif shape == "ServerStream":
            async for _ in channel.unary_stream(method)(payloads[0]):
                replies += 1
        elif shape == "ClientStream":
            await channel.stream_unary(method)(iter(payloads))
            replies = 1
        else:
            async for _ in channel.stream_stream(method)(iter(payloads)):
                replies += 1
    except grpc.aio.AioRpcError as err:
        return replies, err
    return replies, None


@pytest.mark.parametrize("shape", ["Unary", "ServerStream", "ClientStream", "Bidi"])
@pytest.mark.parametrize(("payload", "reason"), [(GARBAGE, "Wire format was corrupt"),
                                                 (BAD_UTF8, "String field had bad UTF-8")])
async def test_undecodable_bytes_get_invalid_argument_saying_why(served, shape: str, payload: bytes,
                                                                  reason: str) -> None:
    channel, seen = served
    _, error = await _call(channel, shape, [payload])
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert f"/{SERVICE}/{shape}" in details and "llmserve.v1.CancelRequest" in details and reason in details, details
    assert seen.requests == []
    assert await _call(channel, shape, [GOOD]) == (1, None)  # the server goes on serving
    assert seen.requests == ["r1"]


@pytest.mark.parametrize("shape", ["ClientStream", "Bidi"])
async def test_a_stream_is_refused_at_its_first_undecodable_message(served, shape: str) -> None:
    channel, seen = served
    replies, error = await _call(channel, shape, [GOOD, GOOD, GARBAGE, GOOD])
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert seen.requests == ["r1", "r1"]
    assert replies == (2 if shape == "Bidi" else 0)


async def test_a_flood_logs_one_warning_and_no_error(served, caplog: pytest.LogCaptureFixture) -> None:
    channel, _ = served
    with caplog.at_level(logging.DEBUG):
        for index in range(40):
            _, error = await _call(channel, ("Unary", "Bidi")[index % 2], [GARBAGE if index % 3 else BAD_UTF8])
            assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    warnings = [r for r in caplog.records if r.name == "llmserve.runtime.undecodable"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, [r.getMessage() for r in warnings]
    assert f"/{SERVICE}/Unary" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_rate_limited_warning_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    warning = RateLimitedWarning(logging.getLogger("test.ratelimit"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert warning.warn("bad %s", "a")
        now[0] += 9.9
        assert not warning.warn("bad %s", "b") and not warning.warn("bad %s", "c")
        now[0] += 0.1
        assert warning.warn("bad %s", "d")
        assert not warning.warn("bad %s", "e")
    assert [r.getMessage() for r in caplog.records] == ["bad a", "bad d (and 2 more since the last such line)"]
