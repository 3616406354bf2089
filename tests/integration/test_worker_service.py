"""The real worker server with the real KV store server, both on 127.0.0.1:0: Describe, a
pipelined Execute stream that prefills (chunked) and decodes a tiny Llama and matches Hugging
Face's greedy tokens, with its blocks leased ahead (only the first step waits for the store, which
learns of every lease within the sync interval), the failure paths (bad plan, refused lease, a
second stream), and a store that goes away and comes back: steps within the blocks held ahead go
on, one that needs more fails as KV_UNAVAILABLE, and the restarted store is rebuilt from the
worker's declaration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
import torch

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.channel import open_channel, wait_healthy
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.unit.worker.helpers import hf_greedy, save_tiny_checkpoint
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker

RT, BE = common_pb2.SERVICE_CLASS_REAL_TIME, common_pb2.SERVICE_CLASS_BEST_EFFORT
NUM_BLOCKS, BLOCK = 24, 4


@pytest_asyncio.fixture
async def stack(tmp_path) -> AsyncIterator[tuple[ServiceServer, ServiceServer, torch.nn.Module]]:
    hf = save_tiny_checkpoint("llama", tmp_path)
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=2.0))
    config = WorkerConfig(model=str(tmp_path), kvstore_addr=kvstore.address, worker_id="w-test", device="cpu",
                          dtype="float32", num_kv_blocks=NUM_BLOCKS, block_size=BLOCK, max_num_batched_tokens=64,
                          max_num_seqs=8)
    worker = await start_worker(config)
    try:
        yield worker, kvstore, hf
    finally:
        await worker.stop(0.5)
        await kvstore.stop(0.5)



def _new(rid: str, tokens: list[int], service_class: int) -> worker_pb2.NewRequest:
    return worker_pb2.NewRequest(request_id=rid, token_ids=tokens, num_prompt_tokens=len(tokens), service_class=service_class,
                                 sampling=common_pb2.SamplingParams(temperature=0.0, seed=1))


def _sched(rid: str, n: int, computed: int, sample: bool = True) -> worker_pb2.ScheduledRequest:
    return worker_pb2.ScheduledRequest(request_id=rid, num_tokens=n, num_computed_tokens=computed, sample=sample)


async def _stats(stub: kvstore_pb2_grpc.KvStoreStub) -> kvstore_pb2.PoolStats:
    return await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w-test"))


def _usage(stats: kvstore_pb2.PoolStats) -> tuple[int, int, int]:
    return stats.num_best_effort, stats.num_real_time, stats.num_leases


async def _until_stats(stub: kvstore_pb2_grpc.KvStoreStub, predicate, timeout_s: float = 5.0) -> kvstore_pb2.PoolStats:
    """The store's stats once `predicate` holds: the worker tells it in batches, within its sync
    interval (1 s by default)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            stats = await _stats(stub)
        except grpc.aio.AioRpcError as err:  # a store just restarted: not reached yet, or the pool not re-declared
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND), err
            assert loop.time() < deadline, f"the store never answered: {err}"
            await asyncio.sleep(0.05)
            continue
        if predicate(stats):
            break
        assert loop.time() < deadline, f"the store's stats never got there: {stats}"
        await asyncio.sleep(0.02)
    # Every block is in one place: free, held ahead by the worker, or leased to a request.
    assert stats.num_free + stats.num_reserved + stats.num_real_time + stats.num_best_effort == stats.num_blocks
    return stats


async def test_describe_reports_model_and_pool(stack) -> None:
    worker, kvstore, _ = stack
    await wait_healthy(worker.address, timeout_s=5)
    async with open_channel(worker.address) as channel:
        info = await worker_pb2_grpc.WorkerStub(channel).Describe(worker_pb2.DescribeRequest())
    assert (info.worker_id, info.vocab_size, info.block_size, info.num_blocks) == ("w-test", 96, BLOCK, NUM_BLOCKS)
    assert info.bytes_per_block == 2 * 2 * BLOCK * 2 * 16 * 4  # layers, K/V, tokens, kv heads, head dim, fp32
    assert (info.dtype, info.device, info.max_model_len, info.max_num_seqs) == ("float32", "cpu", 256, 8)
    # It calibrated itself at start (warm-up on, calibration on by default).
    assert info.HasField("step_cost") and info.step_cost.num_samples >= 4 and info.step_cost.a_s > 0
    assert min(info.step_cost.b_s_per_prefill_token, info.step_cost.c_s_per_decode_seq,
               info.step_cost.d_s_per_kv_token) >= 0 and info.step_cost.calibration_s > 0
    async with open_channel(kvstore.address) as channel:
        stats = await _stats(kvstore_pb2_grpc.KvStoreStub(channel))
    assert (stats.num_blocks, stats.num_free) == (NUM_BLOCKS, NUM_BLOCKS)  # the pool is registered


async def test_pipelined_execute_matches_hf_greedy_and_leases_blocks(stack) -> None:
    worker, kvstore, hf = stack
    gen = torch.Generator().manual_seed(7)
    a = torch.randint(0, 96, (10,), generator=gen).tolist()
    b = torch.randint(0, 96, (5,), generator=gen).tolist()
    steps = 8
    expected = {"a": hf_greedy(hf, a, steps), "b": hf_greedy(hf, b, steps + 2)}
    # Plans carry no sampled tokens: the worker feeds each request its own last token.
    plans = [worker_pb2.BatchPlan(step_id=0, new_requests=[_new("a", a, BE), _new("b", b, RT)],
                                  scheduled=[_sched("a", 6, 0, sample=False), _sched("b", 5, 0)]),
             worker_pb2.BatchPlan(step_id=1, scheduled=[_sched("a", 4, 6), _sched("b", 1, 5)])]
    for i in range(2, steps + 1):
        plans.append(worker_pb2.BatchPlan(step_id=i, scheduled=[_sched("a", 1, 10 + i - 2), _sched("b", 1, 5 + i - 1)]))
    plans.append(worker_pb2.BatchPlan(step_id=steps + 1, finished_request_ids=["a"], scheduled=[_sched("b", 1, 5 + steps)]))

    got: dict[str, list[int]] = {"a": [], "b": []}
    async with open_channel(worker.address) as wch, open_channel(kvstore.address) as kch:
        kv = kvstore_pb2_grpc.KvStoreStub(kch)
        call = worker_pb2_grpc.WorkerStub(wch).Execute()
        # Plan 0 alone, so that the store's stats after it are exact.
        await call.write(plans[0])
        for i, plan in enumerate(plans):
            if i == 1:
                await call.write(plans[1])
            if 1 <= i < len(plans) - 1:
                await call.write(plans[i + 1])  # plan N+1 is in flight before result N is read
            result = await call.read()
            assert result.step_id == plan.step_id and not result.error, result.error
            timing = result.timing
            assert timing.forward_ns > 0 and timing.total_ns >= timing.forward_ns
            assert timing.plan_decode_ns > 0 and timing.encode_ns > 0
            # Only the first step waits for the store (an idle worker holds nothing ahead); the
            # others take their blocks from the reserve that sync filled.
            assert timing.kv_rpcs == (1 if i == 0 else 0), (i, timing.kv_rpcs)
            for token in result.sampled:
                got[token.request_id].append(token.token_id)
            if i == 0:
                assert (timing.num_prefill_tokens, timing.num_decode_seqs) == (11, 0)
                # a: 6 tokens → 2 blocks (best-effort end); b: 5 tokens → 2 blocks (real-time end).
                stats = await _until_stats(kv, lambda s: _usage(s) == (2, 2, 2))
                assert stats.num_reserved > 0
        # a was released by the last plan; b holds ceil((5 + 9) / 4) = 4 blocks.
        await _until_stats(kv, lambda s: _usage(s) == (0, 4, 1))
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        # Closing the stream dropped b's state, released its blocks and gave the reserve back.
        await _until_stats(kv, lambda s: (s.num_free, s.num_leases, s.num_reserved) == (NUM_BLOCKS, 0, 0))
    assert got == {"a": expected["a"], "b": expected["b"]}


async def test_failed_steps_answer_errors_and_the_stream_goes_on(stack) -> None:
    worker, kvstore, _ = stack
    async with open_channel(worker.address) as wch, open_channel(kvstore.address) as kch:
        kv = kvstore_pb2_grpc.KvStoreStub(kch)
        call = worker_pb2_grpc.WorkerStub(wch).Execute()
        # Unknown request: the plan is rejected, nothing changes.
        await call.write(worker_pb2.BatchPlan(step_id=0, scheduled=[_sched("ghost", 1, 3)]))
        result = await call.read()
        assert "ghost" in result.error and "unknown" in result.error and not result.sampled
        assert result.error_code == worker_pb2.STEP_ERROR_CODE_INVALID_PLAN
        # Wrong num_computed_tokens for a new request.
        await call.write(worker_pb2.BatchPlan(step_id=1, new_requests=[_new("x", [1, 2, 3], BE)],
                                              scheduled=[_sched("x", 3, 2)]))
        assert "num_computed_tokens=2" in (await call.read()).error
        # More blocks than the pool has: the store refuses, the step fails, the request is dropped.
        long = list(range(1, 64)) * 2  # 126 tokens → 32 blocks > 24
        await call.write(worker_pb2.BatchPlan(step_id=2, new_requests=[_new("big", long, BE)],
                                              scheduled=[_sched("big", 60, 0, sample=False)]))
        result = await call.read()
        assert not result.error  # 60 tokens = 15 blocks fit
        await call.write(worker_pb2.BatchPlan(step_id=3, scheduled=[_sched("big", 60, 60, sample=False)]))
        result = await call.read()
        assert "RESOURCE_EXHAUSTED" in result.error and result.error_code == worker_pb2.STEP_ERROR_CODE_KV_REFUSED
        # Nothing more was leased: big still holds its 15 blocks (the store hears of them in a batch).
        await _until_stats(kv, lambda s: _usage(s) == (15, 0, 1))
        # The failed step dropped "big"; re-admitting it works and its old lease is released first.
        await call.write(worker_pb2.BatchPlan(step_id=4, new_requests=[_new("big", long[:8], BE)],
                                              scheduled=[_sched("big", 8, 0)]))
        result = await call.read()
        assert not result.error and [t.request_id for t in result.sampled] == ["big"]
        assert result.error_code == worker_pb2.STEP_ERROR_CODE_UNSPECIFIED
        assert result.timing.kv_rpcs == 0  # its 2 blocks came from the 15 released into the reserve
        await _until_stats(kv, lambda s: _usage(s) == (2, 0, 1))
        # One stream per worker: a second Execute is refused while this one is open.
        second = worker_pb2_grpc.WorkerStub(wch).Execute()
        await second.write(worker_pb2.BatchPlan(step_id=0))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await second.read()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF


async def test_an_unreachable_store_fails_the_step_as_kv_unavailable(stack) -> None:
    worker, kvstore, _ = stack
    async with open_channel(worker.address) as wch:
        call = worker_pb2_grpc.WorkerStub(wch).Execute()
        await kvstore.stop(0.1)
        await call.write(worker_pb2.BatchPlan(step_id=0, new_requests=[_new("a", [1, 2, 3], BE)],
                                              scheduled=[_sched("a", 3, 0)]))
        result = await call.read()
        # An idle worker holds nothing ahead: this step needs the store.
        assert result.error_code == worker_pb2.STEP_ERROR_CODE_KV_UNAVAILABLE and "UNAVAILABLE" in result.error
        assert not result.sampled
        call.cancel()


async def test_steps_go_on_while_the_store_is_away_and_the_new_store_is_rebuilt_from_the_worker(tmp_path) -> None:
    hf = save_tiny_checkpoint("llama", tmp_path)
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=2.0))
    port = kvstore.port
    worker = await start_worker(WorkerConfig(
        model=str(tmp_path), kvstore_addr=kvstore.address, worker_id="w-test", device="cpu", dtype="float32",
        num_kv_blocks=NUM_BLOCKS, block_size=BLOCK, max_num_batched_tokens=64, max_num_seqs=8, kv_reserve_blocks=2,
        warmup=False))
    prompt = [5, 17, 33, 2, 71, 9]
    expected = hf_greedy(hf, prompt, 20)
    got: list[int] = []
    try:
        async with open_channel(worker.address) as wch:
            call = worker_pb2_grpc.WorkerStub(wch).Execute()

            async def step(step_id: int, **fields) -> worker_pb2.StepResult:
                await call.write(worker_pb2.BatchPlan(step_id=step_id, **fields))
                result = await call.read()
                got.extend(t.token_id for t in result.sampled)
                return result

            # 6 prompt tokens: 2 blocks from the store, and 2 more held ahead at each end.
            first = await step(0, new_requests=[_new("a", prompt, RT)], scheduled=[_sched("a", 6, 0)])
            assert not first.error and first.timing.kv_rpcs == 1
            await kvstore.stop(0)  # the store dies
            # Decodes to 24 tokens fit the 2 blocks held and the 4 held ahead (the real-time
            # request takes the best-effort part too): no store needed.
            for i in range(1, 19):
                result = await step(i, scheduled=[_sched("a", 1, 5 + i)])
                assert not result.error and result.timing.kv_rpcs == 0, (i, result.error)
            # Token 25 needs a 7th block: the store is needed, and away.
            failed = await step(19, scheduled=[_sched("a", 1, 24)])
            assert failed.error_code == worker_pb2.STEP_ERROR_CODE_KV_UNAVAILABLE, failed.error
            kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=2.0), f"127.0.0.1:{port}")  # it comes back
            async with open_channel(kvstore.address) as kch:
                kv = kvstore_pb2_grpc.KvStoreStub(kch)
                # The worker re-declares what it holds: "a"'s 6 blocks (its release is due with the next step).
                stats = await _until_stats(kv, lambda s: s.num_real_time + s.num_reserved == 6, timeout_s=10.0)
                assert stats.live and stats.num_blocks == NUM_BLOCKS
                # The scheduler recomputes "a" from its 25 known tokens: the first 24 go into its old
                # blocks, back from the reserve; the 25th needs a 7th block, from the store again
                # (or from the refill the worker asked for in the background meanwhile).
                known = prompt + got
                again = await step(20, new_requests=[_new("a", known, RT)],
                                   scheduled=[_sched("a", 24, 0, sample=False)])
                assert not again.error and again.timing.kv_rpcs == 0, again.error
                last = await step(21, scheduled=[_sched("a", 1, 24)])
                assert not last.error and last.timing.kv_rpcs <= 1, last.error
                await _until_stats(kv, lambda s: _usage(s) == (0, 7, 1))
            call.cancel()
    finally:
        await worker.stop(0.5)
        await kvstore.stop(0.5)
    assert got == expected
