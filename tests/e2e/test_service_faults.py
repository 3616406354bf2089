"""One service of a supervised stack killed mid-generation, as `llmserve up` runs it (kvstore, two
workers, the scheduler and two gateways as processes; `Stack.supervise` restarts the dead one on
its address): no accepted request is lost, every stream ends with exactly the tokens of an
undisturbed run (greedy), the killed service comes back, and the KV accounting returns to idle.

- a worker: its requests move to the other worker, it restarts and rejoins, and gets new work;
- the scheduler: the gateway resubmits every open stream with the tokens it has (a pause, no error);
- a gateway: its open streams end UNAVAILABLE (retryable), the scheduler aborts their requests
  and their blocks are free within one lease TTL; the other gateway's streams are untouched;
  retried through the restarted gateway they give the same tokens;
- the kvstore: it restarts empty, each worker declares its pool and the leases it holds (the
  Sync RPC), so the new store is rebuilt from them and leases no block twice; every stream ends
  with the reference tokens.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from llmserve.runtime.channel import open_channel, wait_healthy
from llmserve.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    kvstore_pb2,
    kvstore_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from llmserve_stack.launch import ServiceSpec, StackConfig, free_port, service_specs
from llmserve_stack.restarts import RestartPolicy
from llmserve_stack.supervisor import RunningService, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The weather today is"]
MAX_TOKENS = 40
LEASE_TTL_S = 2.0
WORKERS = ("worker-0", "worker-1")


def _request(prompt: str) -> gateway_pb2.GenerateRequest:
    return gateway_pb2.GenerateRequest(
        text=prompt, sampling=common_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True),
        slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT))


@dataclass
class Supervised:
    stack: Stack
    gateways: list[gateway_pb2_grpc.GatewayStub]
    kv: kvstore_pb2_grpc.KvStoreStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    reference: list[list[int]]

    def service(self, name: str) -> RunningService:
        return next(s for s in self.stack.running if s.spec.name == name)

    async def back(self, old: RunningService, timeout_s: float = 120.0) -> RunningService:
        """The process that replaced `old`, once healthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            service = self.service(old.spec.name)
            if service is not old and not service.exited.done():
                await wait_healthy(service.spec.address, timeout_s=deadline - loop.time())
                return service
            await asyncio.sleep(0.05)
        raise AssertionError(f"{old.spec.name} was not restarted within {timeout_s:.0f}s")

    async def pools(self) -> list[kvstore_pb2.PoolStats]:
        return [await self.kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id=w), timeout=5) for w in WORKERS]

    async def until_idle(self, timeout_s: float) -> list[kvstore_pb2.PoolStats]:
        """Every pool all free with no lease (polled up to `timeout_s`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            pools = await self.pools()
            if all(p.num_leases == 0 and p.num_free == p.num_blocks for p in pools) or loop.time() > deadline:
                return pools
            await asyncio.sleep(0.05)

    async def until_workers(self, n: int, timeout_s: float = 60.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                stats = await self.scheduler.GetStats(scheduler_pb2.GetStatsRequest(), timeout=5)
                if stats.num_workers == n or loop.time() > deadline:
                    return stats.num_workers
            except grpc.aio.AioRpcError:
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)


async def _generate(stub: gateway_pb2_grpc.GatewayStub, prompt: str, progress: list[int], index: int) -> list[int]:
    tokens: list[int] = []
    async for chunk in stub.Generate(_request(prompt), timeout=300):
        tokens.extend(chunk.token_ids)
        progress[index] = len(tokens)
    return tokens


async def _start_all(*stubs: gateway_pb2_grpc.GatewayStub) -> list[list[asyncio.Task[list[int]]]]:
    """Every prompt streaming through each gateway, returned once every stream has some tokens
    (so that a kill now interrupts all of them): the tasks per gateway."""
    progress = [0] * (len(PROMPTS) * len(stubs))
    tasks = [[asyncio.create_task(_generate(stub, p, progress, g * len(PROMPTS) + i)) for i, p in enumerate(PROMPTS)]
             for g, stub in enumerate(stubs)]
    every = [t for per_gateway in tasks for t in per_gateway]
    for _ in range(3000):
        if min(progress) >= 4 or any(t.done() for t in every):
            break
        await asyncio.sleep(0.01)
    assert not any(t.done() for t in every), "too fast to interrupt: raise MAX_TOKENS"
    return tasks


def _second_gateway(specs: list[ServiceSpec]) -> ServiceSpec:
    """Another gateway of the same scheduler (as compose and Kubernetes may run several)."""
    first = specs[-1]
    address = f"{first.address.rpartition(':')[0]}:{free_port()}"
    return ServiceSpec("gateway-2", first.module, address, {**first.env, "LLMSERVE_ADDRESS": address, "LLMSERVE_HTTP_ADDRESS": ""},
                       ready_timeout_s=first.ready_timeout_s)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def supervised() -> AsyncIterator[Supervised]:
    # float32: a request recomputed elsewhere must reproduce its undisturbed tokens exactly, and in
    # bfloat16 a prefill and a decode of the same position round differently (near-ties flip).
    config = StackConfig(port=0, http_port=0, num_workers=2, model="default", load_format="dummy", num_kv_blocks=96,
                         max_num_seqs=8, lease_ttl_s=LEASE_TTL_S, log_format="text", policy="bros", dtype="float32")
    policy = RestartPolicy(max_restarts=3, window_s=600.0, first_backoff_s=0.2, max_backoff_s=1.0)
    with tempfile.TemporaryDirectory() as log_dir:
        # As `llmserve up`: a folder for the stack's life, for the workers' calibration files.
        specs = service_specs(config, ports={"gateway": free_port()}, state_dir=log_dir)
        specs.append(_second_gateway(specs))
        async with Stack(specs, log_dir=log_dir) as stack:
            stop = asyncio.get_running_loop().create_future()
            supervising = asyncio.create_task(stack.supervise(stop, policy))
            by_name = {s.spec.name: s.spec.address for s in stack.running}
            async with (open_channel(by_name["gateway"]) as g1, open_channel(by_name["gateway-2"]) as g2,
                        open_channel(by_name["kvstore"]) as kv, open_channel(by_name["scheduler"]) as sched):
                gateways = [gateway_pb2_grpc.GatewayStub(g1), gateway_pb2_grpc.GatewayStub(g2)]
                progress = [0] * len(PROMPTS)
                # The undisturbed run: the reference tokens (greedy, so they are deterministic).
                reference = await asyncio.gather(*(_generate(gateways[0], p, progress, i)
                                                   for i, p in enumerate(PROMPTS)))
                assert all(len(t) == MAX_TOKENS for t in reference)
                yield Supervised(stack, gateways, kvstore_pb2_grpc.KvStoreStub(kv),
                                 scheduler_pb2_grpc.SchedulerStub(sched), reference)
            assert not supervising.done(), "the supervisor gave up"
            stop.set_result(None)
            assert await supervising == 0


async def test_a_killed_worker_loses_no_request_restarts_and_gets_new_work(supervised: Supervised) -> None:
    (tasks,) = await _start_all(supervised.gateways[0])
    dead = supervised.service("worker-0")
    dead.process.send_signal(signal.SIGKILL)
    assert await asyncio.gather(*tasks) == supervised.reference  # moved to worker-1, same tokens

    await supervised.back(dead)
    assert await supervised.until_workers(2) == 2  # rejoined
    most = 0

    async def watch_worker_0() -> None:
        nonlocal most
        while True:
            (pool, _) = await supervised.pools()
            most = max(most, pool.num_leases)
            await asyncio.sleep(0.02)

    watching = asyncio.create_task(watch_worker_0())
    try:
        again = await asyncio.gather(*(_generate(supervised.gateways[0], p, [0], 0) for p in PROMPTS))
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    assert again == supervised.reference
    assert most > 0, "the restarted worker got no work"
    pools = await supervised.until_idle(timeout_s=10.0)
    assert all(p.live and p.num_leases == 0 and p.num_free == p.num_blocks for p in pools)


async def test_a_killed_scheduler_is_restarted_and_every_stream_continues(supervised: Supervised) -> None:
    (tasks,) = await _start_all(supervised.gateways[0])
    dead = supervised.service("scheduler")
    dead.process.send_signal(signal.SIGKILL)
    # The gateway stays SERVING while its scheduler is away (its streams wait): no liveness probe
    # restarts it for a peer's outage.
    await wait_healthy(supervised.service("gateway").spec.address, timeout_s=2.0)
    outputs = await asyncio.gather(*tasks)
    assert outputs == supervised.reference  # the client saw a pause, not an error
    again = await supervised.back(dead)
    assert again.process.pid != dead.process.pid
    assert await supervised.until_workers(2) == 2
    pools = await supervised.until_idle(timeout_s=10.0)
    assert all(p.num_leases == 0 and p.num_free == p.num_blocks for p in pools)
    assert pools[0].num_checkpoints == 0  # nothing stale in the host tier either


async def test_a_killed_gateway_ends_its_streams_unavailable_and_frees_their_blocks(supervised: Supervised) -> None:
    doomed, others = await _start_all(*supervised.gateways)
    dead = supervised.service("gateway")
    dead.process.send_signal(signal.SIGKILL)
    for outcome in await asyncio.gather(*doomed, return_exceptions=True):
        assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.gather(*others) == supervised.reference  # the other gateway is untouched
    pools = await supervised.until_idle(timeout_s=LEASE_TTL_S)  # the scheduler aborted the orphaned requests
    assert all(p.num_leases == 0 and p.num_free == p.num_blocks for p in pools)
    await supervised.back(dead)
    retried = await asyncio.gather(*(_generate(supervised.gateways[0], p, [0], 0) for p in PROMPTS))
    assert retried == supervised.reference


# ---- the kvstore -----------------------------------------------------------------------------
# Runs last in this module (a failure may leave corrupt KV behind).
async def test_a_killed_kvstore_is_restarted_and_every_stream_continues(supervised: Supervised) -> None:
    (tasks,) = await _start_all(supervised.gateways[0])
    dead = supervised.service("kvstore")
    dead.process.send_signal(signal.SIGKILL)
    outputs = await asyncio.wait_for(asyncio.gather(*tasks), 30.0)
    assert outputs == supervised.reference
    await supervised.back(dead)
    pools = await supervised.until_idle(timeout_s=10.0)
    assert all(p.live and p.num_leases == 0 and p.num_free == p.num_blocks for p in pools)
