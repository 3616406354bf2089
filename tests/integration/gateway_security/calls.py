"""Keys, requests and calls that the gateway security tests share."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.client import build_request
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

KEY_A, KEY_B = "key-of-tenant-a-0123456789", "key-of-tenant-b-0123456789"
AUTH_A = (("authorization", f"Bearer {KEY_A}"),)
AUTH_B = (("authorization", f"Bearer {KEY_B}"),)
LENGTH = common_pb2.FINISH_REASON_LENGTH


def req(prompt: Any = "Hello", **kw: Any) -> gateway_pb2.GenerateRequest:
    return build_request(prompt, **{"service_class": "best_effort", **kw})


async def run(stub: gateway_pb2_grpc.GatewayStub, request: gateway_pb2.GenerateRequest,
              metadata: Any = AUTH_A) -> list[gateway_pb2.GenerateResponse]:
    return [r async for r in stub.Generate(request, metadata=metadata)]


async def rest_of(call: Any) -> list[gateway_pb2.GenerateResponse]:
    """What a call that was read with read() still streams (the two APIs cannot be mixed)."""
    out = []
    while (message := await call.read()) is not grpc.aio.EOF:
        out.append(message)
    return out


async def status_of(stub: gateway_pb2_grpc.GatewayStub, request: gateway_pb2.GenerateRequest,
                    metadata: Any = AUTH_A) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run(stub, request, metadata)
    return info.value



class StallWatch:
    """While a burst of work runs: the gaps between a stream's messages, the lag of this event
    loop (the gateway's own: it runs in-process) and the time of each health check."""

    def __init__(self, stream: Any, health: health_pb2_grpc.HealthStub) -> None:
        self.stream, self.health = stream, health
        self.gaps: list[float] = []
        self.lags: list[float] = []
        self.health_s: list[float] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch_stream()), asyncio.create_task(self._watch_health()),
                       asyncio.create_task(self._watch_loop())]

    async def stop(self) -> None:
        self._stop.set()
        self.stream.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch_stream(self) -> None:
        last = time.perf_counter()
        while await self.stream.read() is not grpc.aio.EOF:
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    async def _watch_loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - t0 - 0.01)

    async def _watch_health(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            await self.health.Check(health_pb2.HealthCheckRequest())
            self.health_s.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
