"""Fault tolerance with real processes (kvstore, two workers, scheduler, gateway, as `llmserve up`
starts them): a worker SIGKILLed mid-generation loses its KV leases at the TTL (its blocks return
to its pool, a late release is refused without harm), the scheduler re-routes its requests to
the other worker, and every accepted request finishes with exactly the tokens of an undisturbed
run: none is lost. Nothing restarts the dead worker here (no `Stack.supervise`), so its leases
expire; test_service_faults.py kills each service under the supervisor."""

from __future__ import annotations

import asyncio
import signal
import tempfile

import grpc
import pytest

from llmserve_stack.launch import StackConfig, free_port, service_specs
from llmserve.runtime.channel import open_channel
from llmserve_stack.supervisor import Stack
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, kvstore_pb2, kvstore_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The weather today is"]
MAX_TOKENS = 40
LEASE_TTL_S = 2.0


def _request(prompt: str) -> gateway_pb2.GenerateRequest:
    return gateway_pb2.GenerateRequest(
        text=prompt, sampling=common_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True),
        slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT))


async def _generate(stub: gateway_pb2_grpc.GatewayStub, prompt: str, progress: list[int], index: int) -> list[int]:
    tokens: list[int] = []
    async for chunk in stub.Generate(_request(prompt), timeout=300):
        tokens.extend(chunk.token_ids)
        progress[index] = len(tokens)
    return tokens


async def _pool(kv: kvstore_pb2_grpc.KvStoreStub, worker_id: str) -> kvstore_pb2.PoolStats:
    return await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id=worker_id), timeout=5)


async def test_sigkilled_worker_loses_leases_and_its_requests_finish_elsewhere() -> None:
    # float32: a recomputed request must reproduce its undisturbed tokens exactly, and in bfloat16 a
    # prefill and a decode of the same position round differently (random weights give near-ties).
    config = StackConfig(port=0, http_port=0, num_workers=2, model="default", load_format="dummy", num_kv_blocks=96,
                         max_num_seqs=8, lease_ttl_s=LEASE_TTL_S, log_format="text", policy="bros", dtype="float32")
    specs = service_specs(config, ports={"gateway": free_port()})
    with tempfile.TemporaryDirectory() as log_dir:
        async with Stack(specs, log_dir=log_dir) as stack:
            by_name = {s.spec.name: s for s in stack.running}
            gateway_addr, kvstore_addr = by_name["gateway"].spec.address, by_name["kvstore"].spec.address
            async with (open_channel(gateway_addr) as channel, open_channel(kvstore_addr) as kv_channel,
                        open_channel(by_name["scheduler"].spec.address) as sched_channel):
                stub = gateway_pb2_grpc.GatewayStub(channel)
                kv = kvstore_pb2_grpc.KvStoreStub(kv_channel)
                sched = scheduler_pb2_grpc.SchedulerStub(sched_channel)

                # The undisturbed run: the reference tokens (greedy, so they are deterministic).
                progress = [0] * len(PROMPTS)
                reference = await asyncio.gather(*(_generate(stub, p, progress, i) for i, p in enumerate(PROMPTS)))
                assert all(len(t) == MAX_TOKENS for t in reference)

                # Again, and kill worker-0 once every stream is under way.
                progress = [0] * len(PROMPTS)
                tasks = [asyncio.create_task(_generate(stub, p, progress, i)) for i, p in enumerate(PROMPTS)]
                for _ in range(3000):
                    if min(progress) >= 4 or any(t.done() for t in tasks):
                        break
                    await asyncio.sleep(0.01)
                assert not any(t.done() for t in tasks), "too fast to interrupt: raise MAX_TOKENS"
                before = await _pool(kv, "worker-0")
                assert before.live and before.num_leases > 0, "worker-0 should be serving some of the requests"
                by_name["worker-0"].process.send_signal(signal.SIGKILL)
                outputs = await asyncio.gather(*tasks)

                # No accepted request is lost, and each produced exactly the undisturbed tokens.
                assert outputs == reference

                # worker-0's leases expire within the TTL (+ the store's expiry period) and its
                # blocks return to its pool.
                for _ in range(int(LEASE_TTL_S * 2 / 0.05) + 40):
                    dead = await _pool(kv, "worker-0")
                    if not dead.live:
                        break
                    await asyncio.sleep(0.05)
                assert not dead.live and dead.num_leases == 0 and dead.num_free == dead.num_blocks
                assert dead.num_expired_leases >= before.num_leases
                # A late release in the dead worker's name is refused and changes nothing.
                healthy = await _pool(kv, "worker-1")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await kv.Apply(kvstore_pb2.ApplyRequest(worker_id="worker-0", release_request_ids=["anything"]),
                                   timeout=5)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                assert await _pool(kv, "worker-1") == healthy
                assert (await _pool(kv, "worker-0")).num_free == dead.num_blocks

                stats = await sched.GetStats(scheduler_pb2.GetStatsRequest(), timeout=5)
                assert stats.num_workers == 1
                # The stack still serves.
                again = await _generate(stub, PROMPTS[0], [0], 0)
                assert again == reference[0]
            stack.running = [s for s in stack.running if s.spec.name != "worker-0"]
