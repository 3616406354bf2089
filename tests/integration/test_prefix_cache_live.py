"""Prefix caching through real servers on 127.0.0.1:0 (KV store, a worker on a tiny random Llama
in float32, the scheduler): a request whose prompt shares full blocks with an earlier one reuses
their KV (`num_cached_tokens` on its last event, the worker's hit counter) and its greedy tokens
are exactly Hugging Face's, as are those of the cold run; another tenant with the same prompt
shares nothing; with `--no-prefix-cache` nothing is reused; and after all requests finish the
store's record equals the worker's (the cache's blocks are leased, none lost or doubly held)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio
import torch

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.plan_book import CACHE_HOLDER
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from tests.unit.worker.helpers import hf_greedy, save_tiny_checkpoint
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker

BLOCK = 4
PROMPT = [5, 17, 33, 2, 41, 60, 7, 12, 90, 3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43]  # 22 tokens
MAX_TOKENS = 12


@dataclass
class Stack:
    kvstore: ServiceServer
    worker: ServiceServer
    hf: torch.nn.Module


@pytest_asyncio.fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    hf = save_tiny_checkpoint("llama", tmp_path)
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=5.0))
    worker = await start_worker(WorkerConfig(
        model=str(tmp_path), kvstore_addr=kvstore.address, worker_id="w0", device="cpu", dtype="float32",
        num_kv_blocks=64, block_size=BLOCK, max_num_batched_tokens=64, max_num_seqs=8, warmup=False))
    try:
        yield Stack(kvstore, worker, hf)
    finally:
        await worker.stop(0.5)
        await kvstore.stop(0.5)



async def generate(stub: scheduler_pb2_grpc.SchedulerStub, rid: str, prompt: list[int],
                   tenant: str = "") -> tuple[list[int], int]:
    """(greedy tokens, prompt tokens the prefix cache served)."""
    tokens: list[int] = []
    async for event in stub.Submit(scheduler_pb2.SubmitRequest(
            request_id=rid, prompt_token_ids=prompt, tenant=tenant,
            sampling=common_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True),
            slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT))):
        tokens += event.token_ids
        if event.finish_reason:
            assert event.finish_reason == common_pb2.FINISH_REASON_LENGTH, event.error_message
            return tokens, event.num_cached_tokens
    raise AssertionError("the stream ended without a finish reason")


def prefix_stats(stack: Stack):  # type: ignore[no-untyped-def]
    return stack.worker.service.runner.book.prefix.stats


async def test_a_prefix_hit_reuses_the_kv_and_its_greedy_tokens_equal_a_cold_run(stack: Stack) -> None:
    scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(stack.worker.address,),
                                                             kvstore_addr=stack.kvstore.address))
    longer = PROMPT + [8, 9, 10, 11, 12, 13]
    try:
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            cold, cached = await generate(stub, "cold", PROMPT, tenant="t1")
            assert cached == 0 and cold == hf_greedy(stack.hf, PROMPT, MAX_TOKENS)
            assert prefix_stats(stack).inserted_blocks == len(PROMPT) // BLOCK

            again, cached = await generate(stub, "again", PROMPT, tenant="t1")
            assert cached == (len(PROMPT) - 1) // BLOCK * BLOCK == 20  # the last prompt token is computed
            assert again == cold
            assert prefix_stats(stack).hit_blocks == 5
            registry = stack.worker.service.metrics.registry  # the same counts on the worker's /metrics
            assert registry.get_sample_value("llmserve_prefix_cache_blocks_total", {"worker": "w0", "event": "hit"}) == 5
            assert registry.get_sample_value("llmserve_prefix_cache_cached_blocks", {"worker": "w0"}) == 5

            extended, cached = await generate(stub, "extended", longer, tenant="t1")
            assert cached == 20 and extended == hf_greedy(stack.hf, longer, MAX_TOKENS)

            other, cached = await generate(stub, "other-tenant", PROMPT, tenant="t2")
            assert cached == 0 and other == cold  # same tokens, but no KV shared across tenants

            both = await asyncio.gather(generate(stub, "c1", longer, tenant="t1"),
                                        generate(stub, "c2", longer, tenant="t1"))
            for tokens, cached in both:  # concurrent readers of the same shared blocks
                assert cached == 24 and tokens == extended
            assert prefix_stats(stack).missed_blocks == 0
            await _cache_is_leased(stack)
    finally:
        await scheduler.stop(0.5)
    await _everything_is_back(stack)


async def _store_record(stack: Stack) -> kvstore_pb2.PoolStats:
    """The store's stats once the worker told it everything."""
    keeper = stack.worker.service.kv.keeper
    for _ in range(250):
        if not keeper.pending:
            break
        await asyncio.sleep(0.02)
    assert not keeper.pending
    async with open_channel(stack.kvstore.address) as channel:
        return await kvstore_pb2_grpc.KvStoreStub(channel).GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))


async def _cache_is_leased(stack: Stack) -> None:
    """Every request finished: the store records one lease, the cache's, of its blocks."""
    keeper = stack.worker.service.kv.keeper
    stats = await _store_record(stack)
    assert keeper.num_cached == keeper.num_held > 0 and set(keeper.store_view) == {CACHE_HOLDER}
    assert stats.num_leases == 1 and stats.num_blocks - stats.num_free - stats.num_reserved == keeper.num_cached


async def _everything_is_back(stack: Stack) -> None:
    """The scheduler is gone: the worker dropped its cache and gave every block back."""
    keeper = stack.worker.service.kv.keeper
    for _ in range(250):
        if keeper.num_held == 0 and keeper.num_reserved == 0 and not keeper.pending:
            break
        await asyncio.sleep(0.02)
    stats = await _store_record(stack)
    assert keeper.num_held == 0 and stats.num_leases == 0 and stats.num_free == stats.num_blocks, stats


async def test_without_prefix_caching_nothing_is_reused(stack: Stack) -> None:
    scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(stack.worker.address,),
                                                             kvstore_addr=stack.kvstore.address, prefix_cache=False))
    try:
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            first, cached_first = await generate(stub, "a", PROMPT)
            second, cached_second = await generate(stub, "b", PROMPT)
        assert (cached_first, cached_second) == (0, 0) and first == second == hf_greedy(stack.hf, PROMPT, MAX_TOKENS)
        assert prefix_stats(stack).inserted_blocks == 0
    finally:
        await scheduler.stop(0.5)


async def test_a_request_goes_to_the_worker_whose_cache_holds_its_prefix(stack: Stack, tmp_path) -> None:
    """Two idle workers: ties rotate (a to w0, b to w1), then a request sharing b's prefix goes to
    w1, where the hit is, although rotation (and least-load's first-on-ties) would pick w0."""
    second = await start_worker(WorkerConfig(
        model=str(tmp_path), kvstore_addr=stack.kvstore.address, worker_id="w1", device="cpu", dtype="float32",
        num_kv_blocks=64, block_size=BLOCK, max_num_batched_tokens=64, max_num_seqs=8, warmup=False))
    scheduler = await start_scheduler(SchedulerServiceConfig(worker_addrs=(stack.worker.address, second.address),
                                                             kvstore_addr=stack.kvstore.address))
    other = [(7 + t) % 90 for t in PROMPT]
    try:
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            assert (await generate(stub, "a", PROMPT))[1] == 0
            assert (await generate(stub, "b", other))[1] == 0
            tokens, cached = await generate(stub, "c", other + [1, 2, 3])
        assert cached == len(other) // BLOCK * BLOCK and tokens == hf_greedy(stack.hf, other + [1, 2, 3], MAX_TOKENS)
        hits = {name: server.service.runner.book.prefix.stats.hit_blocks for name, server in
                (("w0", stack.worker), ("w1", second))}
        assert hits == {"w0": 0, "w1": len(other) // BLOCK}
    finally:
        await scheduler.stop(0.5)
        await second.stop(0.5)
