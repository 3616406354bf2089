"""The gateway's start: NOT_SERVING and UNAVAILABLE until its scheduler answers, a clear failure
when the scheduler never does, and the port released afterwards. Needs no scheduler."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import GatewayConfig
from gateway.server import start_gateway
from llmserve.runtime.channel import open_channel
from llmserve.v1 import gateway_pb2, gateway_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from llmserve.model_source import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("default"))


async def test_unavailable_while_waiting_for_the_scheduler_then_start_fails(tokenizer: Any) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = GatewayConfig(scheduler_addr=f"127.0.0.1:{free_port()}", scheduler_timeout_s=2.0, http_address="127.0.0.1:0")
    starting = asyncio.create_task(start_gateway(config, address, tokenizer=tokenizer))
    async with open_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(50):
            try:
                status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)).status
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = gateway_pb2_grpc.GatewayStub(channel)
        request = gateway_pb2.GenerateRequest(text="hello")
        request.slo.service_class = 3
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.Generate(request):
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "starting" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetModelInfo(gateway_pb2.GetModelInfoRequest())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        with pytest.raises(TimeoutError, match="not healthy"):
            await starting
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # nothing listens any more


def test_config_rejects_bad_flags() -> None:
    with pytest.raises(ValueError, match="--scheduler-addr"):
        GatewayConfig(scheduler_addr="")
    with pytest.raises(ValueError, match="--max-concurrent-requests must be >= 1"):
        GatewayConfig(scheduler_addr="x:1", max_concurrent_requests=0)
    with pytest.raises(ValueError, match="--load-format"):
        GatewayConfig(scheduler_addr="x:1", load_format="onnx")
