"""API keys per tenant (gRPC metadata and the HTTP header), ids and Cancel scoped to the caller's
tenant, and per-tenant quotas with retry info, through real servers on 127.0.0.1:0."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.integration.gateway_security.calls import AUTH_A, AUTH_B, KEY_A, LENGTH, req, rest_of, run, status_of
from tests.integration.inprocess import Backend, http_base

pytestmark = pytest.mark.asyncio(loop_scope="package")


# ---- API keys ----------------------------------------------------------------------------------------
async def test_calls_without_a_valid_key_are_unauthenticated(secured: ServiceServer) -> None:
    async with open_channel(secured.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for metadata, fragment in (((), "needs an API key"), ((("authorization", "Bearer wrong-key-000000"),), "not valid"),
                                   ((("authorization", KEY_A),), "Bearer <key>")):
            err = await status_of(stub, req(), metadata)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED and fragment in err.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetModelInfo(gateway_pb2.GetModelInfoRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await run(stub, req(max_tokens=2), AUTH_A))[-1].finish_reason == LENGTH
        assert (await run(stub, req(max_tokens=2), AUTH_B))[-1].finish_reason == LENGTH  # the hashed entry
        # Health stays open: probes carry no keys.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        err = await status_of(stub, req(tenant="tenant-b"), AUTH_A)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "belongs to tenant 'tenant-a'" in err.details()


async def test_http_needs_the_bearer_key_too(secured: ServiceServer) -> None:
    base = http_base(secured) + "/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="not-a-key-000000000", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError, match="not valid"):
            await stranger.completions.create(model="default", prompt="Hi", max_tokens=1)
    async with openai.AsyncOpenAI(base_url=base, api_key=KEY_A, max_retries=0) as tenant_a:
        result = await tenant_a.completions.create(model="default", prompt="Hi", max_tokens=1)
        assert result.usage.completion_tokens == 1
    async with aiohttp.ClientSession(http_base(secured)) as http:
        async with http.get("/health") as health:  # open to probes
            assert health.status == 200


async def test_ids_and_cancel_are_scoped_to_the_callers_tenant(secured: ServiceServer, backend: Backend) -> None:
    async with open_channel(secured.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        a_call = stub.Generate(req(request_id="job-1", max_tokens=40, ignore_eos=True), metadata=AUTH_A)
        await a_call.read()
        # B neither sees nor collides with A's job-1.
        assert not (await stub.Cancel(gateway_pb2.CancelRequest(request_id="job-1"), metadata=AUTH_B)).cancelled
        b_last = (await run(stub, req(request_id="job-1", max_tokens=2), AUTH_B))[-1]
        assert b_last.request_id == "job-1" and b_last.finish_reason == LENGTH
        err = await status_of(stub, req(request_id="job-1"), AUTH_A)
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        rest = await rest_of(a_call)
        assert rest[-1].finish_reason == LENGTH and rest[-1].usage.completion_tokens == 40  # B's Cancel did nothing
        # A cancels its own.
        a_call = stub.Generate(req(request_id="job-2", max_tokens=400, ignore_eos=True), metadata=AUTH_A)
        await a_call.read()
        assert (await stub.Cancel(gateway_pb2.CancelRequest(request_id="job-2"), metadata=AUTH_A)).cancelled
        assert (await rest_of(a_call))[-1].finish_reason == common_pb2.FINISH_REASON_CANCELLED
        assigned = (await run(stub, req(max_tokens=1)))[-1].request_id
        assert len(assigned) == 32 and int(assigned, 16) >= 0  # uuid4: not guessable
    assert await backend.idle()


# ---- quotas --------------------------------------------------------------------------------------------
async def test_a_tenant_over_its_concurrency_quota_gets_resource_exhausted_with_retry_info(
        secured: ServiceServer) -> None:
    async with open_channel(secured.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        calls = [stub.Generate(req(max_tokens=60, ignore_eos=True), metadata=AUTH_A) for _ in range(2)]
        for call in calls:
            await call.read()
        err = await status_of(stub, req(), AUTH_A)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant 'tenant-a'" in err.details()
        assert dict(err.trailing_metadata() or ())["retry-after"] == "1"
        assert (await run(stub, req(max_tokens=1), AUTH_B))[-1].finish_reason == LENGTH  # B is not A
        async with aiohttp.ClientSession(http_base(secured)) as http:
            async with http.post("/v1/completions", json={"prompt": "Hi"}, headers={"authorization": f"Bearer {KEY_A}"}) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "1"
        for call in calls:
            call.cancel()


async def test_tokens_per_minute(backend: Backend, keys_file: Path) -> None:
    gateway = await backend.gateway(api_keys_file=str(keys_file), tenant_tokens_per_minute=60)
    async with open_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await run(stub, req([1] * 20, max_tokens=30, ignore_eos=True))  # 50 of A's 60 tokens
        err = await status_of(stub, req([1] * 20, max_tokens=1))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "50 of its 60 tokens per minute" in err.details()
        assert 1 <= int(dict(err.trailing_metadata() or ())["retry-after"]) <= 60
        err = await status_of(stub, req([1] * 61, max_tokens=1), AUTH_B)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "send a shorter prompt" in err.details()
        await run(stub, req([1] * 20, max_tokens=1), AUTH_B)  # B's own minute

