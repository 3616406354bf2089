"""Requests, checkpoint chunks and waits that the KV store service tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc

RT = common_pb2.SERVICE_CLASS_REAL_TIME
BE = common_pb2.SERVICE_CLASS_BEST_EFFORT
KIB = 1024


class FakeClock:
    """Seconds that only move when a test says so (the expiry task still ticks in real time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lease(request_id: str, service_class: int, num_blocks: int) -> kvstore_pb2.LeaseSpec:
    return kvstore_pb2.LeaseSpec(request_id=request_id, service_class=service_class, num_blocks=num_blocks)


async def register(stub: kvstore_pb2_grpc.KvStoreStub, worker_id: str, num_blocks: int = 16) -> kvstore_pb2.RegisterPoolResponse:
    return await stub.RegisterPool(
        kvstore_pb2.RegisterPoolRequest(worker_id=worker_id, num_blocks=num_blocks, block_size=16, bytes_per_block=4096)
    )


async def wait_for(predicate_coro, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.02)):
        if await predicate_coro():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")



SHAPE = (8, 2, 16, 8, 64)  # [layers, 2, block_size, kv_heads, head_dim] float32: 512 KiB a block
BLOCK_BYTES = 8 * 2 * 16 * 8 * 64 * 4


def block_bytes_of(index: int) -> bytes:
    return bytes(((index * 131 + i * 7) & 0xFF) for i in range(256)) * (BLOCK_BYTES // 256)


def chunks_of(request_id: str, blocks: dict[int, bytes], piece: int, final_tokens: int = 0) -> list[kvstore_pb2.KvChunk]:
    """Blocks cut in `piece`-byte chunks (not aligned to anything); the last one final if asked."""
    out = []
    for index, data in blocks.items():
        for offset in range(0, len(data), piece):
            out.append(
                kvstore_pb2.KvChunk(
                    request_id=request_id, block_index=index, data=data[offset : offset + piece], offset=offset,
                    block_bytes=BLOCK_BYTES, dtype="float32", shape=SHAPE,
                )
            )
    if final_tokens:
        out[-1].final = True
        out[-1].num_tokens = final_tokens
    return out


async def send(stub: kvstore_pb2_grpc.KvStoreStub, chunks: list[kvstore_pb2.KvChunk]) -> kvstore_pb2.CheckpointResponse:
    async def stream() -> AsyncIterator[kvstore_pb2.KvChunk]:
        for chunk in chunks:
            yield chunk

    return await stub.Checkpoint(stream())


async def status_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    """The status of a failed call, unary or server-streaming."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return info.value.code(), info.value.details() or ""
