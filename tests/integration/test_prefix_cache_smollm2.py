"""Prefix caching on SmolLM2-135M from the bundled GGUF (float32), through real servers on
127.0.0.1:0: requests that share a long system prefix, and a conversation's second turn that
resends the first, produce exactly the greedy tokens of cold runs (a scheduler with
`--no-prefix-cache` on the same worker) while their shared blocks come from the cache. Slow: the
GGUF takes ~15 s to load."""

from __future__ import annotations

import pytest

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.channel import open_channel
from llmserve.v1 import scheduler_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from tests.integration.test_prefix_cache_live import generate
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker

pytestmark = pytest.mark.slow

# A system prompt of the SmolLM2 tokenizer's ids (any ids of its vocabulary do for greedy identity).
SYSTEM = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
          8182, 2, 198, 1, 4093, 198] * 3
QUESTIONS = ([1780, 314, 260, 3575, 282, 4649, 47, 2], [1780, 314, 260, 3575, 282, 5140, 47, 2],
             [10576, 1041, 5392, 282, 19217, 30, 2])


async def _outputs(scheduler_addr: str, prompts: list[list[int]]) -> list[tuple[list[int], int]]:
    async with open_channel(scheduler_addr) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        return [await generate(stub, f"r{i}", prompt) for i, prompt in enumerate(prompts)]


async def test_smollm2_hits_give_the_cold_runs_greedy_tokens() -> None:
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=10.0))
    worker = await start_worker(WorkerConfig(
        model="default", kvstore_addr=kvstore.address, worker_id="w0", device="cpu", dtype="float32",
        num_kv_blocks=128, block_size=16, max_num_batched_tokens=256, max_num_seqs=4, warmup=False, calibrate=False))
    prompts = [SYSTEM + q for q in QUESTIONS]
    try:
        runs = {}
        for cache in (False, True):
            scheduler = await start_scheduler(SchedulerServiceConfig(
                worker_addrs=(worker.address,), kvstore_addr=kvstore.address, prefix_cache=cache))
            try:
                first = await _outputs(scheduler.address, prompts)
                # The second turn resends the first with its answer and a new question.
                second_turn = prompts[0] + first[0][0] + QUESTIONS[2]
                runs[cache] = first + await _outputs(scheduler.address, [second_turn])
            finally:
                await scheduler.stop(0.5)
        cold, warm = runs[False], runs[True]
        assert [tokens for tokens, _ in warm] == [tokens for tokens, _ in cold]
        assert all(cached == 0 for _, cached in cold)
        shared = len(SYSTEM) // 16 * 16
        assert warm[0][1] == 0 and warm[1][1] == warm[2][1] == shared
        assert warm[3][1] == len(prompts[0]) // 16 * 16  # the first turn's prompt blocks (outputs are not named)
    finally:
        await worker.stop(0.5)
        await kvstore.stop(0.5)


async def test_smollm2_host_tier_hits_give_the_cold_runs_greedy_tokens() -> None:
    """A KV pool of 24 blocks: after other prompts evicted the shared system prompt's blocks, a
    question sharing it is served from the worker's host tier (copied back, not prefilled) with
    the cold run's greedy tokens."""
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=10.0))
    worker = await start_worker(WorkerConfig(
        model="default", kvstore_addr=kvstore.address, worker_id="w0", device="cpu", dtype="float32",
        num_kv_blocks=24, block_size=16, max_num_batched_tokens=256, max_num_seqs=4, warmup=False, calibrate=False,
        kv_reserve_blocks=2, prefix_host_tier_gb=0.5))
    prompts = [SYSTEM + q for q in QUESTIONS[:2]]
    fillers = [[1000 + 400 * k + t for t in range(300)] for k in range(2)]
    try:
        cold_sched = await start_scheduler(SchedulerServiceConfig(
            worker_addrs=(worker.address,), kvstore_addr=kvstore.address, prefix_cache=False))
        try:
            cold = await _outputs(cold_sched.address, [prompts[1]])
        finally:
            await cold_sched.stop(0.5)
        scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(worker.address,),
                                                                 kvstore_addr=kvstore.address))
        try:
            await _outputs(scheduler.address, [prompts[0], *fillers])
            stats = worker.service.runner.book.prefix.stats
            assert stats.demoted_blocks >= len(SYSTEM) // 16
            warm = await _outputs(scheduler.address, [prompts[1]])
        finally:
            await scheduler.stop(0.5)
        assert warm[0][0] == cold[0][0]
        assert warm[0][1] == len(SYSTEM) // 16 * 16 and stats.host_hit_blocks == len(SYSTEM) // 16
    finally:
        await worker.stop(0.5)
        await kvstore.stop(0.5)
