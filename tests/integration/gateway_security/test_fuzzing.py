"""Fuzzing both fronts through real servers: gRPC requests never break the gateway, HTTP bodies
get OpenAI errors (never a 500), raw undecodable bytes are INVALID_ARGUMENT with one log line."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from llmserve.runtime.channel import open_channel
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.integration.gateway_security.calls import LENGTH, run
from tests.integration.gateway_security.fuzz_inputs import FUZZ, OK_CODES, generate_requests, http_bodies
from tests.integration.inprocess import Backend, http_base

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_fuzzed_grpc_requests_never_break_the_gateway(backend: Backend) -> None:
    gateway = await backend.gateway()
    loop = asyncio.get_running_loop()
    seen: dict[str, int] = {}
    async with open_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def one(request: gateway_pb2.GenerateRequest) -> None:
            try:
                responses = await asyncio.wait_for(run(stub, request, ()), timeout=60)
                assert responses[-1].finish_reason in (LENGTH, common_pb2.FINISH_REASON_STOP), responses[-1]
                seen["ok"] = seen.get("ok", 0) + 1
            except grpc.aio.AioRpcError as err:
                assert err.code() in OK_CODES, f"{err.code()}: {err.details()} for {request}"
                seen[err.code().name] = seen.get(err.code().name, 0) + 1

        @FUZZ
        @given(generate_requests())
        def check(request: gateway_pb2.GenerateRequest) -> None:
            asyncio.run_coroutine_threadsafe(one(request), loop).result()

        await asyncio.to_thread(check)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert seen.get("ok", 0) > 0 and seen.get("INVALID_ARGUMENT", 0) > 0, seen  # both kinds were exercised
    assert await backend.idle()


async def test_fuzzed_http_bodies_get_openai_errors_never_500(backend: Backend) -> None:
    gateway = await backend.gateway()
    loop = asyncio.get_running_loop()
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(http_base(gateway)) as http:

        async def one(path: str, body: bytes) -> None:
            async with http.post(path, data=body, headers={"Content-Type": "application/json"}) as r:
                raw = await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                assert r.status in (200, 400, 404, 413, 429), (r.status, raw[:300], body[:300])
                if r.status != 200:
                    error = json.loads(raw)["error"]
                    assert error["message"] and error["type"]

        @FUZZ
        @given(http_bodies())
        def check(case: tuple[str, bytes]) -> None:
            asyncio.run_coroutine_threadsafe(one(*case), loop).result()

        await asyncio.to_thread(check)
        async with http.get("/health") as r:
            assert r.status == 200
    assert statuses.get(400, 0) > 0, statuses
    assert await backend.idle()


async def test_raw_bytes_are_invalid_argument_with_one_warning_line(backend: Backend,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Garbage and invalid UTF-8 on the wire: INVALID_ARGUMENT (never UNKNOWN with the parser's
    text), and the log gets one line, not one traceback per call."""
    gateway = await backend.gateway()
    loop = asyncio.get_running_loop()
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        call = channel.unary_stream("/llmserve.v1.Gateway/Generate", request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)

        async def one(payload: bytes) -> None:
            try:
                async for _ in call(payload, timeout=60):
                    pass
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as err:
                assert err.code() in OK_CODES, f"{err.code()}: {err.details()} for {payload!r}"
                codes[err.code().name] = codes.get(err.code().name, 0) + 1

        @FUZZ
        @given(st.one_of(st.binary(max_size=64), st.just(b"\x12\x03\xff\xfe\xfd"), st.just(b"\xff" * 8)))
        def check(payload: bytes) -> None:
            asyncio.run_coroutine_threadsafe(one(payload), loop).result()

        with caplog.at_level("WARNING"):
            await asyncio.to_thread(check)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert codes.get("INVALID_ARGUMENT", 0) >= 2, codes
    undecodable = [r for r in caplog.records if "undecodable request" in r.getMessage()]
    assert len(undecodable) == 1 and not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records]
