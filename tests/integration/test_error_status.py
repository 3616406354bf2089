"""What a client sees when a handler fails, through a real server on 127.0.0.1:0 built by
`start_server` (so with the error interceptor every service gets), for the four RPC shapes:
a domain error gets its table code and message, before or after the first streamed message; a
bug gets INTERNAL with an incident id and nothing of the exception (type, text, stack), and its
traceback is logged once; a handler that aborts by itself keeps its status. (One error of each
kind of the KV store, bugs included, through its real server: kvstore_service/test_errors_and_cli.py.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from llmserve.errors import NotFoundError
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import start_server

SERVICE = "llmserve.test.Errors"
SECRET = "password=hunter2"


def _failure(kind: str) -> BaseException:
    return {"domain": NotFoundError("no request r1: check the id"), "bug": ZeroDivisionError(SECRET)}[kind]


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise _failure(request.decode())


async def _server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    kind, _, after = request.decode().partition(":")
    if after:
        yield b"first"
    raise _failure(kind)


async def _client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    async for request in requests:
        raise _failure(request.decode())
    return b""


async def _bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"echo"
        raise _failure(request.decode())


async def _aborts(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")


def _add(server: grpc.aio.Server) -> None:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Aborts": grpc.unary_unary_rpc_method_handler(_aborts),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    running = await start_server(_add, [SERVICE])
    try:
        async with open_channel(running.address) as channel:
            yield channel
    finally:
        await running.stop(0)


async def _call(channel: grpc.aio.Channel, shape: str, payload: bytes) -> tuple[list[bytes], grpc.aio.AioRpcError]:
    method = f"/{SERVICE}/{shape}"
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if shape == "Unary":
            await channel.unary_unary(method)(payload)
        elif shape == "ServerStream":
            async for message in channel.unary_stream(method)(payload):
                received.append(message)
        elif shape == "ClientStream":
            await channel.stream_unary(method)(iter([payload]))
        else:
            async for message in channel.stream_stream(method)(iter([payload])):
                received.append(message)
    return received, info.value


SHAPES = [("Unary", b"{}"), ("ServerStream", b"{}"), ("ServerStream", b"{}:after"), ("ClientStream", b"{}"), ("Bidi", b"{}")]


@pytest.mark.parametrize("shape, payload", SHAPES)
async def test_a_domain_error_gets_its_code_and_message(channel: grpc.aio.Channel, shape: str, payload: bytes) -> None:
    received, error = await _call(channel, shape, payload.replace(b"{}", b"domain"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details() == "no request r1: check the id"
    assert received == ([b"first"] if b"after" in payload else [b"echo"] if shape == "Bidi" else [])


@pytest.mark.parametrize("shape, payload", SHAPES)
async def test_a_bug_is_internal_with_nothing_of_the_exception_and_one_logged_traceback(
    channel: grpc.aio.Channel, shape: str, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="llmserve.runtime.errors"):
        _, error = await _call(channel, shape, payload.replace(b"{}", b"bug"))
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error ") and "logged" in details
    assert SECRET not in details and "ZeroDivision" not in details and "Traceback" not in details
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError  # type: ignore[index]
    incident = details.split()[2].rstrip(":")
    assert incident in logged[0].getMessage()


async def test_a_handler_that_aborts_keeps_its_own_status(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Aborts")(b"")
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not yours")
