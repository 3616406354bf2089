"""One stack for the package: kvstore, one worker (dummy SmolLM2 weights, CPU), the scheduler
(`tests/integration/inprocess.py`) and a gateway over them, all in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from gateway.client import GatewayClient
from tests.integration.gateway_api.calls import Stack
from tests.integration.inprocess import running_backend


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def stack() -> AsyncIterator[Stack]:
    async with running_backend() as backend:
        # A lost scheduler is waited for 1 s (not the default minute) before streams fail: the
        # last test of test_streams.py loses it for good.
        gateway = await backend.gateway(scheduler_outage_s=1.0)
        limits = gateway.service.model.limits  # type: ignore[union-attr]
        yield Stack(gateway, backend, limits.vocab_size, limits.max_context_length)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def client(stack: Stack) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(stack.address) as c:
        yield c
