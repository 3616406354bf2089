"""Multi-megabyte checkpoints through the real KV store service, chunked both ways and restored
byte-exact, and the checkpoints it refuses or drops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from llmserve.runtime.metrics import ServiceMetrics
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc
from tests.integration.kvstore_service.calls import (
    BLOCK_BYTES,
    KIB,
    SHAPE,
    block_bytes_of,
    chunks_of,
    register,
    send,
    wait_for,
)

async def test_multi_megabyte_checkpoint_is_chunked_and_restored_byte_exact(
    stub: kvstore_pb2_grpc.KvStoreStub, metrics: ServiceMetrics
) -> None:
    blocks = {i: block_bytes_of(i) for i in range(5)}  # 2.5 MiB
    # Lazy checkpointing: full blocks early, in one call ...
    early = await send(stub, chunks_of("be-1", {i: blocks[i] for i in range(4)}, piece=200 * KIB))
    assert (early.num_blocks, early.bytes_stored) == (4, 4 * BLOCK_BYTES)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Restore(kvstore_pb2.RestoreRequest(request_id="be-1")):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "not complete" in (info.value.details() or "")
    # ... and the tail block at preemption, final.
    tail = await send(stub, chunks_of("be-1", {4: blocks[4]}, piece=300 * KIB, final_tokens=77))
    assert (tail.num_blocks, tail.bytes_stored) == (5, BLOCK_BYTES)

    received: dict[int, bytearray] = {}
    chunks = []
    async for chunk in stub.Restore(kvstore_pb2.RestoreRequest(request_id="be-1", dtype="float32", shape=SHAPE)):
        chunks.append((chunk.block_index, chunk.offset, len(chunk.data), chunk.final, chunk.num_tokens))
        assert chunk.dtype == "float32" and tuple(chunk.shape) == SHAPE and chunk.block_bytes == BLOCK_BYTES
        block = received.setdefault(chunk.block_index, bytearray())
        assert chunk.offset == len(block)
        block.extend(chunk.data)
    assert {i: bytes(b) for i, b in received.items()} == blocks
    assert len(chunks) == 10 and max(size for _, _, size, _, _ in chunks) <= 256 * KIB  # 2 chunks a block
    assert [c[3] for c in chunks] == [False] * 9 + [True] and chunks[-1][4] == 77

    stats_worker = await register(stub, "w0", 4)
    assert stats_worker.lease_ttl_ms > 0
    stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    assert (stats.num_checkpoints, stats.host_tier_bytes) == (1, 5 * BLOCK_BYTES)
    assert stats.host_tier_capacity_bytes == 8 * 1024 * 1024  # the fixture's --host-tier-gb
    # The bytes moved each way reach the Prometheus registry (published every second).
    sample = metrics.registry.get_sample_value
    for _ in range(60):
        if sample("llmserve_checkpoint_bytes_total", {"direction": "restore"}):
            break
        await asyncio.sleep(0.05)
    assert sample("llmserve_checkpoint_bytes_total", {"direction": "save"}) == 5 * BLOCK_BYTES
    assert sample("llmserve_checkpoint_bytes_total", {"direction": "restore"}) == 5 * BLOCK_BYTES

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Restore(kvstore_pb2.RestoreRequest(request_id="be-1", dtype="bfloat16")):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bfloat16" in (info.value.details() or "")

    assert (await stub.DropCheckpoint(kvstore_pb2.DropCheckpointRequest(request_id="be-1"))).dropped
    assert not (await stub.DropCheckpoint(kvstore_pb2.DropCheckpointRequest(request_id="be-1"))).dropped
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Restore(kvstore_pb2.RestoreRequest(request_id="be-1")):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_checkpoint_refusals_drop_the_request(stub: kvstore_pb2_grpc.KvStoreStub) -> None:
    # The host tier holds 8 MiB = 16 blocks: a 20-block checkpoint is refused and leaves nothing.
    blocks = {i: block_bytes_of(i) for i in range(20)}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await send(stub, chunks_of("big", blocks, piece=1024 * KIB, final_tokens=300))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "recompute" in (info.value.details() or "")
    await register(stub, "w0", 4)
    stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    assert (stats.num_checkpoints, stats.host_tier_bytes) == (0, 0)
    # A malformed chunk (wrong block_bytes) is INVALID_ARGUMENT, and chunks of two requests in one call too.
    bad = chunks_of("x", {0: blocks[0]}, piece=BLOCK_BYTES)
    bad[0].block_bytes = 123
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await send(stub, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "block_bytes" in (info.value.details() or "")
    mixed = chunks_of("y", {0: blocks[0]}, piece=BLOCK_BYTES) + chunks_of("z", {0: blocks[1]}, piece=BLOCK_BYTES)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await send(stub, mixed)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    assert stats.num_checkpoints == 0


async def test_cancelled_checkpoint_keeps_nothing(stub: kvstore_pb2_grpc.KvStoreStub) -> None:
    await register(stub, "w0", 4)
    sent_all = asyncio.Event()
    hold = asyncio.Event()

    async def stream() -> AsyncIterator[kvstore_pb2.KvChunk]:
        for chunk in chunks_of("gone", {0: block_bytes_of(0)}, piece=100 * KIB):
            yield chunk
        sent_all.set()
        await hold.wait()  # the worker dies before closing its stream

    call = stub.Checkpoint(stream())
    await asyncio.wait_for(sent_all.wait(), 3)

    async def stats() -> kvstore_pb2.PoolStats:
        return await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))

    async def block_arrived() -> bool:
        return (await stats()).host_tier_bytes == BLOCK_BYTES

    await wait_for(block_arrived)
    call.cancel()

    async def dropped() -> bool:
        return (await stats()).num_checkpoints == 0

    await wait_for(dropped)

