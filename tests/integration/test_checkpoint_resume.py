"""Bidirectional KV through real servers on 127.0.0.1:0 (KV store, two workers on a tiny random
Llama, and the scheduler service): a best-effort request preempted by checkpoint resumes from the
host tier on the same worker or on the other one and produces exactly Hugging Face's greedy
tokens without recomputing its prefix; a lost checkpoint falls back to recompute inside the step
with the same tokens; and a real-time request that needs the blocks best-effort requests hold
takes them (checkpointing the victims), with every request's output still exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
import torch

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.channel import open_channel
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import start_scheduler
from tests.unit.worker.helpers import hf_greedy, save_tiny_checkpoint
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker

BE, RT = common_pb2.SERVICE_CLASS_BEST_EFFORT, common_pb2.SERVICE_CLASS_REAL_TIME
BLOCK = 4


@dataclass
class Stack:
    kvstore: ServiceServer
    workers: list[ServiceServer]
    hf: torch.nn.Module
    model_dir: str


@pytest_asyncio.fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    hf = save_tiny_checkpoint("llama", tmp_path)
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=5.0))
    workers = []
    try:
        for name in ("w-a", "w-b"):
            workers.append(await start_worker(WorkerConfig(
                model=str(tmp_path), kvstore_addr=kvstore.address, worker_id=name, device="cpu", dtype="float32",
                num_kv_blocks=24, block_size=BLOCK, max_num_batched_tokens=64, max_num_seqs=8,
                checkpoint_lazy_blocks=2, warmup=False)))
        yield Stack(kvstore, workers, hf, str(tmp_path))
    finally:
        for worker in workers:
            await worker.stop(0.5)
        await kvstore.stop(0.5)



class Session:
    """One Execute stream: send a plan, get its result."""

    def __init__(self, address: str) -> None:
        self.channel = open_channel(address)
        self.call = worker_pb2_grpc.WorkerStub(self.channel).Execute()
        self.step_id = 0
        self.checkpoint_bytes = 0  # copied out of the device cache, over all steps

    async def run(self, **fields) -> worker_pb2.StepResult:
        await self.call.write(worker_pb2.BatchPlan(step_id=self.step_id, **fields))
        self.step_id += 1
        result = await self.call.read()
        assert not result.error, result.error
        self.checkpoint_bytes += result.timing.checkpoint_bytes
        return result

    async def close(self) -> None:
        await self.call.done_writing()
        await self.call.read()  # EOF
        await self.channel.close()


def _sampling() -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(temperature=0.0, seed=3)


async def _decode(session: Session, rid: str, computed: int, n: int) -> list[int]:
    tokens = []
    for i in range(n):
        result = await session.run(scheduled=[worker_pb2.ScheduledRequest(
            request_id=rid, num_tokens=1, num_computed_tokens=computed + i, sample=True)])
        tokens.append(result.sampled[0].token_id)
    return tokens


async def _wait_complete(kv: kvstore_pb2_grpc.KvStoreStub, rid: str) -> int:
    """Waits until the host tier can restore `rid` (the worker sends in the background)."""
    for _ in range(200):
        try:
            chunks = [c async for c in kv.Restore(kvstore_pb2.RestoreRequest(request_id=rid))]
            return chunks[-1].num_tokens
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            await asyncio.sleep(0.02)
    raise AssertionError(f"checkpoint of {rid} never completed")


async def _preempt_then_resume(stack: Stack, resume_on: int, lose_checkpoint: bool) -> tuple[list[int], worker_pb2.StepResult]:
    prompt = [5, 17, 33, 2, 41, 60, 7, 12, 90, 3]
    first = Session(stack.workers[0].address)
    rid = "be-1"
    result = await first.run(
        new_requests=[worker_pb2.NewRequest(request_id=rid, token_ids=prompt, num_prompt_tokens=len(prompt),
                                            sampling=_sampling(), service_class=BE)],
        scheduled=[worker_pb2.ScheduledRequest(request_id=rid, num_tokens=len(prompt), num_computed_tokens=0, sample=True)])
    tokens = [result.sampled[0].token_id]
    tokens += await _decode(first, rid, len(prompt), 6)  # 17 tokens known, 16 computed: 4 full blocks
    computed = len(prompt) + len(tokens) - 1
    await first.run(preempted_request_ids=[rid], checkpoint_request_ids=[rid])
    # Lazily, two full blocks at a time while it decoded; the preemption itself had no tail left.
    assert first.checkpoint_bytes == 4 * stack.workers[0].service.description.bytes_per_block
    async with open_channel(stack.kvstore.address) as channel:
        kv = kvstore_pb2_grpc.KvStoreStub(channel)
        assert await _wait_complete(kv, rid) == computed
        # The device blocks went back: to the worker's reserve at once, which the idle worker gives
        # back to the store within its sync interval.
        for _ in range(100):
            stats = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w-a"))
            if stats.num_free == stats.num_blocks:
                break
            await asyncio.sleep(0.05)
        assert stats.num_leases == 0 and stats.num_free == stats.num_blocks
        if lose_checkpoint:
            assert (await kv.DropCheckpoint(kvstore_pb2.DropCheckpointRequest(request_id=rid))).dropped
    session = first if resume_on == 0 else Session(stack.workers[1].address)
    resumed = await session.run(
        new_requests=[worker_pb2.NewRequest(
            request_id=rid, token_ids=prompt + tokens, num_prompt_tokens=len(prompt), sampling=_sampling(),
            service_class=BE, num_output_tokens=len(tokens), restore_from_checkpoint=True,
            num_computed_tokens=computed)],
        scheduled=[worker_pb2.ScheduledRequest(request_id=rid, num_tokens=1, num_computed_tokens=computed, sample=True)])
    tokens.append(resumed.sampled[0].token_id)
    tokens += await _decode(session, rid, computed + 1, 5)
    await session.run(finished_request_ids=[rid])
    for s in {id(first): first, id(session): session}.values():
        await s.close()
    return tokens, resumed


@pytest.mark.parametrize("resume_on", [0, 1], ids=["same-worker", "other-worker"])
async def test_resume_from_checkpoint_is_bit_exact_without_recompute(stack: Stack, resume_on: int) -> None:
    tokens, resumed = await _preempt_then_resume(stack, resume_on, lose_checkpoint=False)
    assert tokens == hf_greedy(stack.hf, [5, 17, 33, 2, 41, 60, 7, 12, 90, 3], 13)
    assert list(resumed.restore_failed_request_ids) == []
    assert resumed.timing.num_recomputed_tokens == 0
    assert resumed.timing.restore_bytes == 4 * stack.workers[0].service.description.bytes_per_block
    assert resumed.timing.num_prefill_tokens == 0 and resumed.timing.num_decode_seqs == 1  # nothing recomputed
    # The finished request's checkpoint is dropped (after the worker's own writes).
    async with open_channel(stack.kvstore.address) as channel:
        kv = kvstore_pb2_grpc.KvStoreStub(channel)
        for _ in range(100):
            stats = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w-a"))
            if stats.num_checkpoints == 0:
                break
            await asyncio.sleep(0.02)
        assert stats.num_checkpoints == 0 and stats.host_tier_bytes == 0


async def test_lost_checkpoint_falls_back_to_recompute_with_the_same_tokens(stack: Stack) -> None:
    tokens, resumed = await _preempt_then_resume(stack, 1, lose_checkpoint=True)
    assert tokens == hf_greedy(stack.hf, [5, 17, 33, 2, 41, 60, 7, 12, 90, 3], 13)
    assert list(resumed.restore_failed_request_ids) == ["be-1"]
    assert resumed.timing.num_recomputed_tokens == 16
    assert resumed.timing.num_prefill_tokens == 17  # the whole prefix, recomputed inside the step


async def _submit(stub: scheduler_pb2_grpc.SchedulerStub, rid: str, prompt: list[int], n: int, cls: int) -> tuple[list[int], int]:
    slo = common_pb2.Slo(service_class=cls)
    if cls == RT:
        slo.ttft_ms, slo.tpot_ms = 60_000, 60_000
    request = scheduler_pb2.SubmitRequest(
        request_id=rid, prompt_token_ids=prompt, slo=slo,
        sampling=common_pb2.SamplingParams(max_tokens=n, temperature=0.0, seed=1, ignore_eos=True))
    tokens, preemptions = [], 0
    async for event in stub.Submit(request, timeout=120):
        tokens.extend(event.token_ids)
        preemptions = max(preemptions, event.num_preemptions)
    return tokens, preemptions


async def test_real_time_takes_best_effort_blocks_and_victims_resume_exactly(stack: Stack) -> None:
    """Two BE requests fill most of one worker's 24 blocks; an RT request then needs blocks they
    hold. BROS preempts BE by checkpoint; every output equals the greedy reference and no BE
    token is recomputed."""
    scheduler = await start_scheduler(SchedulerServiceConfig(
        worker_addrs=(stack.workers[0].address,), kvstore_addr=stack.kvstore.address, policy="bros"))
    try:
        gen = torch.Generator().manual_seed(11)
        prompts = {rid: torch.randint(3, 96, (n,), generator=gen).tolist()
                   for rid, n in (("be-a", 30), ("be-b", 28), ("rt", 24))}
        lengths = {"be-a": 30, "be-b": 30, "rt": 12}
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            be = [asyncio.create_task(_submit(stub, rid, prompts[rid], lengths[rid], BE)) for rid in ("be-a", "be-b")]
            await asyncio.sleep(0.6)  # BE is decoding and holds most of the pool
            rt_tokens, rt_preemptions = await _submit(stub, "rt", prompts["rt"], lengths["rt"], RT)
            be_results = await asyncio.gather(*be)
        outputs = {"rt": rt_tokens, "be-a": be_results[0][0], "be-b": be_results[1][0]}
        for rid, tokens in outputs.items():
            assert tokens == hf_greedy(stack.hf, prompts[rid], lengths[rid]), rid
        assert rt_preemptions == 0
        book = scheduler.service.checkpoints
        assert book.stats.num_checkpoints >= 1 and book.stats.num_restores >= 1
        assert book.stats.num_failed_restores == 0 and book.stats.recomputed_tokens == 0
        assert sum(r[1] for r in be_results) >= 1
        assert len(book) == 0  # every entry forgotten when its request finished
        assert scheduler.service.capacity is not None and scheduler.service.capacity.num_updates > 0
    finally:
        await scheduler.stop(0.5)
