"""Services that stop and come back on the same address, all four in this process (kvstore, one
worker with dummy weights, scheduler, gateway).

The scheduler, mid-generation: the gateway holds each open stream, resubmits its request with the
tokens the client already has, and every stream ends with exactly the tokens of an undisturbed
run (greedy and seeded sampling); the workers' leases all come back; a Cancel while the scheduler
is away ends the stream CANCELLED. The gateway: a client with the documented retry policy
(`gateway.client.RETRY_SERVICE_CONFIG`) that calls while it restarts gets its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from gateway.client import GatewayClient, build_request
from gateway.config import GatewayConfig
from gateway.server import start_gateway
from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.errors import UnavailableError
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc
from llmserve_stack.launch import free_port
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from worker_svc.start import start_worker
from worker_svc.config import WorkerConfig

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MAX_TOKENS = 48
# (prompt, temperature, seed): greedy and seeded sampling both continue exactly.
REQUESTS = [("The capital of France is", 0.0, None), ("Once upon a time", 0.0, None),
            ("def fibonacci(n):", 0.9, 1234), ("The weather today is", 0.7, 99)]


@dataclass
class Services:
    kvstore: ServiceServer
    worker: ServiceServer
    scheduler: ServiceServer
    gateway: ServiceServer
    scheduler_config: SchedulerServiceConfig
    scheduler_addr: str
    gateway_config: GatewayConfig
    tokenizer: Any

    async def restart_scheduler(self, down_s: float) -> None:
        """Stops the scheduler at once (its streams break), then serves a new one on the same
        address after `down_s`."""
        await self.scheduler.stop(0)
        await asyncio.sleep(down_s)
        self.scheduler = await start_scheduler(self.scheduler_config, self.scheduler_addr)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services() -> AsyncIterator[Services]:
    from llmserve.model_source import load_tokenizer, resolve_model

    tokenizer: Any = await asyncio.to_thread(load_tokenizer, resolve_model("default"))
    kvstore = await start_kvstore(KvStoreConfig())
    worker = await start_worker(WorkerConfig(
        model="default", load_format="dummy", warmup=False, kvstore_addr=kvstore.address, worker_id="w0",
        num_kv_blocks=128, block_size=16, max_num_batched_tokens=256, max_num_seqs=8, device="cpu",
        dtype="float32", checkpoint_lazy_blocks=1), "127.0.0.1:0")  # every full block of BE goes to the host tier
    scheduler_addr = f"127.0.0.1:{free_port()}"
    config = SchedulerServiceConfig(worker_addrs=(worker.address,), kvstore_addr=kvstore.address,
                                    worker_retry_interval_s=0.2)
    scheduler = await start_scheduler(config, scheduler_addr)
    gateway_config = GatewayConfig(scheduler_addr=scheduler_addr, scheduler_outage_s=30.0)
    gateway = await start_gateway(gateway_config, f"127.0.0.1:{free_port()}", tokenizer=tokenizer)
    services = Services(kvstore, worker, scheduler, gateway, config, scheduler_addr, gateway_config, tokenizer)
    try:
        yield services
    finally:
        for server in (services.gateway, services.scheduler, services.worker, services.kvstore):
            await server.stop(0)


async def _generate(client: GatewayClient, prompt: str, temperature: float, seed: int | None,
                    progress: list[int] | None = None, index: int = 0) -> tuple[list[int], str, int]:
    tokens: list[int] = []
    text, finish = "", 0
    async for chunk in client.generate(prompt, max_tokens=MAX_TOKENS, temperature=temperature, seed=seed,
                                       ignore_eos=True, timeout_s=120):
        tokens.extend(chunk.token_ids)
        text += chunk.text
        finish = chunk.finish_reason
        if progress is not None:
            progress[index] = len(tokens)
    return tokens, text, finish


async def _pool(kvstore_addr: str) -> kvstore_pb2.PoolStats:
    async with open_channel(kvstore_addr) as channel:
        return await kvstore_pb2_grpc.KvStoreStub(channel).GetPoolStats(
            kvstore_pb2.GetPoolStatsRequest(worker_id="w0"), timeout=5)


async def _until_idle(kvstore_addr: str) -> kvstore_pb2.PoolStats:
    for _ in range(100):
        stats = await _pool(kvstore_addr)
        if stats.num_leases == 0 and stats.num_free == stats.num_blocks:
            break
        await asyncio.sleep(0.05)
    return stats


async def test_streams_continue_exactly_across_a_scheduler_restart(services: Services) -> None:
    async with GatewayClient(services.gateway.address) as client:
        reference = await asyncio.gather(*(_generate(client, *r) for r in REQUESTS))
        assert all(len(tokens) == MAX_TOKENS for tokens, _, _ in reference)

        progress = [0] * len(REQUESTS)
        tasks = [asyncio.create_task(_generate(client, *r, progress, i)) for i, r in enumerate(REQUESTS)]
        for _ in range(3000):
            # Past one full block each, so that lazy checkpoints of them are in the host tier.
            if min(progress) >= 20 or any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        assert not any(t.done() for t in tasks), "too fast to interrupt: raise MAX_TOKENS"
        upstream = services.gateway.service.lifecycle.upstream  # type: ignore[union-attr]
        resubmits = upstream.num_resubmits
        await services.restart_scheduler(down_s=0.5)
        outputs = await asyncio.gather(*tasks)

    assert outputs == reference  # tokens, text and finish reason: the client saw only a pause
    assert upstream.num_resubmits >= resubmits + len(REQUESTS)
    stats = await _until_idle(services.kvstore.address)
    assert stats.num_leases == 0 and stats.num_free == stats.num_blocks
    assert stats.num_checkpoints == 0 and stats.host_tier_bytes == 0  # nothing stale in the host tier


async def test_a_cancel_while_the_scheduler_is_away_ends_the_stream_cancelled(services: Services) -> None:
    async with GatewayClient(services.gateway.address) as client:
        request_id = "cancel-while-away"
        stream = client.generate("Tell me a story", request_id=request_id, max_tokens=400, ignore_eos=True)
        await stream.__anext__()
        await services.scheduler.stop(0)
        await asyncio.sleep(0.3)  # the stream broke: the gateway waits for the scheduler
        assert await client.cancel(request_id)
        rest = [chunk async for chunk in stream]
        assert rest[-1].finish_reason == common_pb2.FINISH_REASON_CANCELLED
        services.scheduler = await start_scheduler(services.scheduler_config, services.scheduler_addr)
        assert len(services.gateway.service.registry) == 0  # type: ignore[union-attr]
        # The restarted scheduler serves new requests as before.
        tokens, _, finish = await _generate(client, *REQUESTS[0])
        assert len(tokens) == MAX_TOKENS and finish == common_pb2.FINISH_REASON_LENGTH
    stats = await _until_idle(services.kvstore.address)
    assert stats.num_leases == 0 and stats.num_free == stats.num_blocks


async def test_a_client_with_the_retry_policy_rides_out_a_gateway_restart(services: Services) -> None:
    address = services.gateway.address
    await services.gateway.stop(0)

    async def come_back() -> None:
        await asyncio.sleep(1.0)  # nothing listens meanwhile: the client's attempts fail UNAVAILABLE
        services.gateway = await start_gateway(services.gateway_config, address, tokenizer=services.tokenizer)

    restarting = asyncio.create_task(come_back())
    async with GatewayClient(address, retry=True) as client:
        chunks = [c async for c in client.generate_request(build_request(
            REQUESTS[0][0], max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True), timeout_s=60)]
    await restarting
    assert sum(len(c.token_ids) for c in chunks) == MAX_TOKENS
    assert chunks[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
    # Without the policy, the same call fails at once while nothing listens.
    await services.gateway.stop(0)
    async with GatewayClient(address) as client:
        with pytest.raises(UnavailableError):
            async for _ in client.generate(REQUESTS[0][0], max_tokens=2):
                pass
    services.gateway = await start_gateway(services.gateway_config, address, tokenizer=services.tokenizer)
