"""The real KV store service on 127.0.0.1:0, one per test: a fake clock (the expiry task still
ticks in real time against it), a fresh metrics registry, and a stub on a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.channel import open_channel
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import kvstore_pb2_grpc
from tests.integration.kvstore_service.calls import KIB, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics.create("kvstore")


@pytest.fixture
async def server(clock: FakeClock, metrics: ServiceMetrics) -> AsyncIterator[ServiceServer]:
    # TTL 0.2 s: the expiry task runs every 50 ms of real time against the fake clock.
    config = KvStoreConfig(lease_ttl_s=0.2, host_tier_bytes=8 * 1024 * KIB, max_chunk_bytes=256 * KIB)
    running = await start_kvstore(config, "127.0.0.1:0", clock=clock, metrics=metrics)
    yield running
    await running.stop(0.1)


@pytest.fixture
async def stub(server: ServiceServer) -> AsyncIterator[kvstore_pb2_grpc.KvStoreStub]:
    async with open_channel(server.address) as channel:
        yield kvstore_pb2_grpc.KvStoreStub(channel)

