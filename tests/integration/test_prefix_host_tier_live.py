"""The prefix cache's host tier through real servers on 127.0.0.1:0 (KV store, a worker on a tiny
random Llama in float32 with a KV pool small enough that other prompts evict a conversation's
blocks, the scheduler): the evicted blocks are demoted to the worker's host tier, the returning
prompt's hit is served from it (copied back into fresh blocks, not prefilled) and its greedy tokens
are exactly the cold run's and Hugging Face's; without the tier the same sequence recomputes the
prefix; the scheduler's claim counted the host blocks (its mirror saw the demotions); and when the
scheduler leaves, the tier is emptied with the cache and every block is back at the store."""

from __future__ import annotations

import pytest

from llmserve.runtime.channel import open_channel
from llmserve.v1 import scheduler_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from tests.integration.test_prefix_cache_live import (BLOCK, MAX_TOKENS, PROMPT, Stack, _everything_is_back,
                                                      generate, prefix_stats)
from tests.unit.worker.helpers import hf_greedy, save_tiny_checkpoint
from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker

# Three prompts of other conversations, 15 full blocks each: with PROMPT's 5 cached blocks and the
# running request's, a 24-block pool must evict PROMPT's blocks (LRU) to serve them.
FILLERS = [[(31 * k + 7 * t) % 89 + 1 for t in range(60)] for k in range(1, 4)]


async def _stack(tmp_path, host_tier_gb: float) -> Stack:  # noqa: ANN001
    hf = save_tiny_checkpoint("llama", tmp_path)
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=5.0))
    worker = await start_worker(WorkerConfig(
        model=str(tmp_path), kvstore_addr=kvstore.address, worker_id="w0", device="cpu", dtype="float32",
        num_kv_blocks=24, block_size=BLOCK, max_num_batched_tokens=64, max_num_seqs=8, warmup=False,
        kv_reserve_blocks=2, prefix_host_tier_gb=host_tier_gb))
    return Stack(kvstore, worker, hf)


@pytest.mark.parametrize("host_tier_gb", [0.01, 0.0])
async def test_an_evicted_prefix_comes_back_from_the_host_tier_with_exact_tokens(tmp_path, host_tier_gb: float) -> None:
    stack = await _stack(tmp_path, host_tier_gb)
    scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(stack.worker.address,),
                                                             kvstore_addr=stack.kvstore.address))
    cache = stack.worker.service.runner.book.prefix
    try:
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            cold, cached = await generate(stub, "cold", PROMPT, tenant="t1")
            assert cached == 0 and cold == hf_greedy(stack.hf, PROMPT, MAX_TOKENS)
            for k, filler in enumerate(FILLERS):
                await generate(stub, f"filler{k}", filler, tenant="t1")
            stats = prefix_stats(stack)
            assert stats.evicted_blocks >= 5  # PROMPT's blocks went (the least recently used)
            again, cached = await generate(stub, "again", PROMPT, tenant="t1")
            assert again == cold  # greedy tokens as the cold run's, whichever tier served the prefix
            if host_tier_gb:
                assert stats.demoted_blocks >= 5 and stats.host_hit_blocks == 5
                assert cached == 20  # the scheduler claimed the host blocks: its mirror saw them demoted
                registry = stack.worker.service.metrics.registry
                assert registry.get_sample_value("llmserve_prefix_cache_blocks_total",
                                                 {"worker": "w0", "event": "host_hit"}) == 5
            else:
                assert cache.host_tier is None and stats.host_hit_blocks == 0 and cached < 20
            assert stats.missed_blocks == 0
            cache.check()
    finally:
        await scheduler.stop(0.5)
    try:
        await _everything_is_back(stack)
        assert cache.host_tier is None or len(cache.host_tier) == 0  # dropped with the cache
    finally:
        await stack.worker.stop(0.5)
        await stack.kvstore.stop(0.5)
