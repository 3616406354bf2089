"""The KV store dies (SIGKILL) under load and comes back: a real store process that the test kills
and starts again at the same address, with a real worker (tiny random Llama) and the scheduler
service on 127.0.0.1:0. The worker goes on serving from the blocks it holds ahead, steps that need
more fail as KV_UNAVAILABLE and are recomputed by the scheduler, the worker re-declares what it
holds to the new store, the scheduler's capacity stream re-opens and sees the new incarnation,
and every in-flight greedy request finishes with exactly Hugging Face's greedy tokens. At the end
the new store's accounting is idle: no block leased but the worker's prefix cache's (the finished
prompts' full blocks, which the worker declared or synced as its cache's lease), none lost."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import torch

from llmserve.plan import StepErrorCode
from llmserve.runtime.channel import open_channel, wait_healthy
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from scheduler_svc.config import SchedulerServiceConfig
from scheduler_svc.server import SchedulerService, start_scheduler
from tests.unit.worker.helpers import hf_greedy, save_tiny_checkpoint
from worker_svc.config import WorkerConfig
from worker_svc.server import WorkerServicer
from worker_svc.start import start_worker

MAX_TOKENS = 48
NUM_BLOCKS = 64
PROMPTS = {  # request -> (class, prompt)
    "rt-0": (common_pb2.SERVICE_CLASS_REAL_TIME, [3, 14, 15, 92, 65, 35, 89]),
    "rt-1": (common_pb2.SERVICE_CLASS_REAL_TIME, [27, 18, 28, 18, 28]),
    "be-0": (common_pb2.SERVICE_CLASS_BEST_EFFORT, [16, 18, 3, 39, 88, 74, 94, 80, 50]),
    "be-1": (common_pb2.SERVICE_CLASS_BEST_EFFORT, [11, 41, 42, 13]),
}



def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_store(address: str, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "kvstore_svc", "--address", address, "--lease-ttl-s", "3"],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT)
    await wait_healthy(address, timeout_s=60)
    return process


def _submit(stub: scheduler_pb2_grpc.SchedulerStub, rid: str) -> grpc.aio.UnaryStreamCall:
    service_class, prompt = PROMPTS[rid]
    slo = common_pb2.Slo(service_class=service_class)
    if service_class == common_pb2.SERVICE_CLASS_REAL_TIME:
        slo.ttft_ms, slo.tpot_ms = 5000.0, 1000.0
    return stub.Submit(scheduler_pb2.SubmitRequest(
        request_id=rid, prompt_token_ids=prompt, slo=slo,
        sampling=common_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)))


async def _collect(call: grpc.aio.UnaryStreamCall, tokens: list[int]) -> int:
    async for event in call:
        tokens.extend(event.token_ids)
        if event.finish_reason:
            return event.finish_reason
    raise AssertionError("the stream ended without a finish reason")


async def _until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"{what}: not reached in {timeout_s} s"
        await asyncio.sleep(0.02)


async def _idle_pool(kv: kvstore_pb2_grpc.KvStoreStub, worker_id: str, cached: int,
                     timeout_s: float = 10.0) -> kvstore_pb2.PoolStats:
    """The pool once only the worker's prefix cache (`cached` blocks, one lease) holds blocks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        stats = await kv.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id=worker_id), timeout=5)
        if stats.num_leases == (1 if cached else 0) and stats.num_free == stats.num_blocks - cached:
            return stats
        assert loop.time() < deadline, f"the pool never went idle: {stats}"
        await asyncio.sleep(0.05)


async def test_a_killed_store_comes_back_rebuilt_from_the_worker_and_no_request_is_lost(tmp_path: Path) -> None:
    hf = save_tiny_checkpoint("llama", tmp_path / "model")
    expected = {rid: hf_greedy(hf, prompt, MAX_TOKENS) for rid, (_, prompt) in PROMPTS.items()}
    address = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "kvstore.log"
    store = await _start_store(address, log)
    worker = scheduler = None
    try:
        # Four blocks held ahead at each end (refilled below two), blocks of 4 tokens: the four
        # decoding requests go on for a few steps without the store, then run out.
        worker = await start_worker(WorkerConfig(
            model=str(tmp_path / "model"), kvstore_addr=address, worker_id="w0", device="cpu", dtype="float32",
            num_kv_blocks=NUM_BLOCKS, block_size=4, max_num_batched_tokens=64, max_num_seqs=8, kv_reserve_blocks=4,
            kv_sync_interval_s=0.1, warmup=False))
        scheduler = await start_scheduler(SchedulerServiceConfig(
            worker_addrs=(worker.address,), kvstore_addr=address, policy="bros", worker_retry_interval_s=0.2))
        service = scheduler.service
        servicer = worker.service
        assert isinstance(service, SchedulerService) and isinstance(servicer, WorkerServicer)
        link = service.links[0]
        async with open_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            got: dict[str, list[int]] = {rid: [] for rid in PROMPTS}
            streams = [asyncio.create_task(_collect(_submit(stub, rid), got[rid])) for rid in PROMPTS]
            await _until(lambda: min(map(len, got.values())) >= 4, 60, "every request under way")
            assert service.capacity is not None
            await _until(lambda: "w0" in service.capacity.pools, 10, "the capacity stream saw the pool")

            store.send_signal(signal.SIGKILL)  # the store dies with every lease and checkpoint
            store.wait(timeout=10)
            steps_at_kill = link.stats.num_steps
            await _until(lambda: link.stats.failed_steps_by_code.get(StepErrorCode.KV_UNAVAILABLE, 0) >= 1, 30,
                         "a step that needed the dead store")
            assert not any(stream.done() for stream in streams), "too fast to be interrupted: raise MAX_TOKENS"
            # Steps within the blocks held ahead went on without the store.
            assert link.stats.num_steps > steps_at_kill
            await asyncio.sleep(0.5)

            store = await _start_store(address, log)  # it comes back, empty
            finishes = await asyncio.wait_for(asyncio.gather(*streams), timeout=120)

        # No accepted request was lost, and each produced exactly its greedy tokens.
        assert finishes == [common_pb2.FINISH_REASON_LENGTH] * len(PROMPTS)
        assert got == expected
        # The worker re-declared its pool to the new store, which it told apart by its incarnation.
        kv_client = servicer.kv
        assert kv_client.stats.num_store_restarts == 1 and kv_client.keeper.stats.num_declarations >= 1
        # The scheduler's capacity stream re-opened (it retries every second) and saw the new incarnation.
        await _until(lambda: service.capacity.num_store_restarts == 1, 10, "the capacity stream saw the new store")
        assert service.capacity.num_streams >= 2
        assert link.healthy and service.capacity.pools["w0"].live
        # The new store's accounting is idle: no block leased but the prefix cache's (best-effort),
        # none lost, none held ahead.
        cached = kv_client.keeper.num_cached
        assert cached <= sum(len(prompt) // 4 for _, prompt in PROMPTS.values())  # full prompt blocks, if not evicted
        async with open_channel(address) as kv_channel:
            stats = await _idle_pool(kvstore_pb2_grpc.KvStoreStub(kv_channel), "w0", cached)
        assert stats.live and (stats.num_blocks, stats.num_reserved, stats.num_real_time, stats.num_best_effort) == (
            NUM_BLOCKS, 0, 0, cached)
    finally:
        if scheduler is not None:
            await scheduler.stop(0.5)
        if worker is not None:
            await worker.stop(0.5)
        store.terminate()
        try:
            store.wait(timeout=10)
        except subprocess.TimeoutExpired:
            store.kill()
            store.wait()
