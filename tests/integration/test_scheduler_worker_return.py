"""The scheduler service's only worker dies mid-request and comes back (real servers on 127.0.0.1:0:
KV store, a worker on a tiny random Llama, the scheduler): the accepted request waits, parked, while
no worker is healthy, is placed again when the worker's link reports it ready (no polling), and
ends with exactly the tokens of an uninterrupted greedy run."""

from __future__ import annotations

import asyncio

import torch

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.channel import open_channel
from llmserve.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import SchedulerService, start_scheduler
from tests.unit.worker.helpers import hf_greedy, save_tiny_checkpoint
from worker_svc.config import WorkerConfig
from worker_svc.start import start_worker

MAX_TOKENS = 200  # long enough that the request is still running when its worker stops



async def _until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_parked_request_is_placed_when_its_worker_comes_back(tmp_path) -> None:
    hf = save_tiny_checkpoint("llama", tmp_path)
    kvstore = await start_kvstore(KvStoreConfig(lease_ttl_s=5.0))
    config = WorkerConfig(model=str(tmp_path), kvstore_addr=kvstore.address, worker_id="w0", device="cpu",
                          dtype="float32", num_kv_blocks=64, block_size=4, max_num_batched_tokens=64, max_num_seqs=4,
                          warmup=False)
    worker = await start_worker(config)
    port = worker.port
    scheduler = await start_scheduler(SchedulerServiceConfig(
        worker_addrs=(worker.address,), kvstore_addr=kvstore.address, worker_retry_interval_s=0.05))
    service = scheduler.service
    assert isinstance(service, SchedulerService)
    prompt = [3, 14, 15, 92, 65, 35, 89, 79]
    try:
        async with open_channel(scheduler.address) as channel:
            call = scheduler_pb2_grpc.SchedulerStub(channel).Submit(scheduler_pb2.SubmitRequest(
                request_id="r", prompt_token_ids=prompt,
                sampling=common_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True),
                slo=common_pb2.Slo(service_class=common_pb2.SERVICE_CLASS_BEST_EFFORT)))
            tokens = list((await call.read()).token_ids)
            await worker.stop(0)
            await _until(lambda: [r.request_id for r in service._orphans] == ["r"])
            assert not service.links[0].healthy

            worker = await start_worker(config, f"127.0.0.1:{port}")
            while not (event := await asyncio.wait_for(call.read(), timeout=30.0)).finish_reason:
                tokens += event.token_ids
            tokens += event.token_ids
            assert event.finish_reason == common_pb2.FINISH_REASON_LENGTH, event.error_message
        assert not service._orphans
        assert len(tokens) == MAX_TOKENS
        assert tokens == hf_greedy(hf, prompt, MAX_TOKENS)
    finally:
        await scheduler.stop(0.5)
        await worker.stop(0.5)
        await kvstore.stop(0.5)

