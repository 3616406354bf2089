"""The real KV store service on 127.0.0.1:0 through the generated stubs: pools, atomic Apply and its
status codes (one error of each kind of the store's, and a bug as INTERNAL), heartbeats against expiry, the capacity stream, and multi-megabyte checkpoints
chunked both ways and restored byte-exact."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import grpc
import pytest

from kvstore_svc.config import KvStoreConfig
from kvstore_svc.server import start_kvstore
from llmserve.runtime.channel import open_channel, wait_healthy
from llmserve.runtime.metrics import ServiceMetrics
from llmserve.runtime.server import ServiceServer
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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics.create("kvstore")


@pytest.fixture
async def server(clock: FakeClock, metrics: ServiceMetrics) -> AsyncIterator[ServiceServer]:
    # TTL 0.2 s: the expiry task runs every 50 ms of real time against the fake clock.
    config = KvStoreConfig(lease_ttl_s=0.2, host_tier_bytes=8 * 1024 * KIB, max_chunk_bytes=256 * KIB)
    running = await start_kvstore(config, "127.0.0.1:0", clock=clock, metrics=metrics)
    yield running
    await running.stop(0.1)


@pytest.fixture
async def stub(server: ServiceServer) -> AsyncIterator[kvstore_pb2_grpc.KvStoreStub]:
    async with open_channel(server.address) as channel:
        yield kvstore_pb2_grpc.KvStoreStub(channel)


def lease(request_id: str, service_class: int, num_blocks: int) -> kvstore_pb2.LeaseSpec:
    return kvstore_pb2.LeaseSpec(request_id=request_id, service_class=service_class, num_blocks=num_blocks)


async def register(stub: kvstore_pb2_grpc.KvStoreStub, worker_id: str, num_blocks: int = 16) -> kvstore_pb2.RegisterPoolResponse:
    return await stub.RegisterPool(
        kvstore_pb2.RegisterPoolRequest(worker_id=worker_id, num_blocks=num_blocks, block_size=16, bytes_per_block=4096)
    )


async def test_serving_and_two_ended_grants(server: ServiceServer, stub: kvstore_pb2_grpc.KvStoreStub) -> None:
    await wait_healthy(server.address, timeout_s=5)
    reply = await register(stub, "w0", 16)
    assert reply.lease_ttl_ms == 200
    applied = await stub.Apply(
        kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("rt", RT, 3), lease("be", BE, 2), lease("dl", common_pb2.SERVICE_CLASS_DEADLINE, 1)])
    )
    assert [list(g.block_ids) for g in applied.grants] == [[0, 1, 2], [15, 14], [13]]
    assert [g.request_id for g in applied.grants] == ["rt", "be", "dl"]
    applied = await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="w0", release_request_ids=["rt"], leases=[lease("be", BE, 1)]))
    assert applied.num_released == 3 and list(applied.grants[0].block_ids) == [12]
    stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    assert (stats.num_blocks, stats.num_free, stats.num_real_time, stats.num_best_effort, stats.num_leases) == (16, 12, 0, 4, 2)


async def test_apply_refusals_have_clear_codes_and_change_nothing(stub: kvstore_pb2_grpc.KvStoreStub) -> None:
    await register(stub, "w0", 8)
    await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("a", RT, 5)]))
    before = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))

    async def code_of(request: kvstore_pb2.ApplyRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Apply(request)
        return info.value.code(), info.value.details() or ""

    code, details = await code_of(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("b", BE, 3), lease("c", RT, 1)]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "4 blocks asked, 3 free" in details
    code, details = await code_of(kvstore_pb2.ApplyRequest(worker_id="ghost", leases=[lease("b", BE, 1)]))
    assert code == grpc.StatusCode.NOT_FOUND and "RegisterPool" in details
    code, details = await code_of(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("b", common_pb2.SERVICE_CLASS_UNSPECIFIED, 1)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "leases[0].service_class" in details
    code, details = await code_of(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("a", BE, 1)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "holds real_time blocks" in details
    code, _ = await code_of(kvstore_pb2.ApplyRequest(worker_id="", leases=[]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0")) == before

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await register(stub, "w0", 32)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RegisterPool(kvstore_pb2.RegisterPoolRequest(worker_id="w1", num_blocks=0, block_size=16, bytes_per_block=1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "num_blocks" in (info.value.details() or "")
    # Re-registering with the same geometry drops the old leases (a restarted worker starts empty).
    await register(stub, "w0", 8)
    stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))
    assert (stats.num_free, stats.num_leases) == (8, 0)


async def wait_for(predicate_coro, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.02)):
        if await predicate_coro():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_heartbeat_keeps_leases_while_a_silent_worker_expires(clock: FakeClock, stub: kvstore_pb2_grpc.KvStoreStub) -> None:
    await register(stub, "alive", 8)
    await register(stub, "silent", 8)
    await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="alive", leases=[lease("a", RT, 2)]))
    await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="silent", leases=[lease("s", BE, 3), lease("t", RT, 1)]))
    for _ in range(4):  # 0.4 s of fake time in steps of half the TTL; only "alive" heart-beats
        clock.now += 0.1
        beat = await stub.Heartbeat(kvstore_pb2.HeartbeatRequest(worker_id="alive"))
        assert beat.known and beat.num_leases == 1

    async def silent_expired() -> bool:
        stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="silent"))
        return stats.num_expired_leases == 2

    await wait_for(silent_expired)
    silent = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="silent"))
    assert (silent.num_free, silent.num_leases) == (8, 0)
    alive = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="alive"))
    assert (alive.num_real_time, alive.num_leases, alive.num_expired_leases) == (2, 1, 0)
    beat = await stub.Heartbeat(kvstore_pb2.HeartbeatRequest(worker_id="silent"))
    assert (beat.known, beat.num_leases) == (False, 0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="silent", release_request_ids=["s"]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # After re-registering, a late release of an expired lease releases nothing and harms nothing.
    await register(stub, "silent", 8)
    await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="silent", leases=[lease("new", RT, 2)]))
    late = await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="silent", release_request_ids=["s", "t"]))
    assert late.num_released == 0
    stats = await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="silent"))
    assert (stats.num_real_time, stats.num_leases) == (2, 1)


async def test_watch_capacity_streams_changes_and_ends_on_cancel(stub: kvstore_pb2_grpc.KvStoreStub) -> None:
    await register(stub, "w0", 8)
    call = stub.WatchCapacity(kvstore_pb2.WatchCapacityRequest(min_interval_ms=200))
    first = await asyncio.wait_for(call.read(), 3)
    assert (first.worker_id, first.num_free) == ("w0", 8)
    await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("r", RT, 3)]))
    update = await asyncio.wait_for(call.read(), 3)
    assert (update.worker_id, update.num_free, update.num_real_time) == ("w0", 5, 3)
    await register(stub, "w1", 4)  # a new pool shows up on the same stream
    seen = await asyncio.wait_for(call.read(), 3)
    assert (seen.worker_id, seen.num_blocks) == ("w1", 4)
    # A burst of changes inside one interval arrives as one or two updates, the last with the
    # latest numbers, and updates are at least the interval apart.
    loop = asyncio.get_running_loop()
    for i in range(5):
        await stub.Apply(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease(f"b{i}", BE, 1)]))
    updates = [await asyncio.wait_for(call.read(), 3)]
    times = [loop.time()]
    while updates[-1].num_best_effort < 5:
        updates.append(await asyncio.wait_for(call.read(), 3))
        times.append(loop.time())
    assert len(updates) <= 2 and (updates[-1].num_free, updates[-1].num_best_effort) == (0, 5)
    assert all(later - earlier >= 0.15 for earlier, later in zip(times, times[1:]))
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call.read()
    assert call.cancelled()
    # The server is unharmed: a new stream starts with the current stats.
    again = stub.WatchCapacity(kvstore_pb2.WatchCapacityRequest())
    current = {}
    for _ in range(2):
        stats = await asyncio.wait_for(again.read(), 3)
        current[stats.worker_id] = stats.num_free
    assert current == {"w0": 0, "w1": 4}
    again.cancel()


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


async def _status_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    """The status of a failed call, unary or server-streaming."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return info.value.code(), info.value.details() or ""


async def test_each_store_error_reaches_the_client_with_the_code_of_its_shared_base(
    stub: kvstore_pb2_grpc.KvStoreStub,
) -> None:
    """One trigger per error class of kvstore_svc.core.errors, made in this order; the codes are
    those of the shared errors they subclass."""
    Code = grpc.StatusCode
    await register(stub, "w0", 4)
    await send(stub, chunks_of("half", {0: block_bytes_of(0)}, piece=BLOCK_BYTES))  # never final
    await send(stub, chunks_of("done", {0: block_bytes_of(1)}, piece=BLOCK_BYTES, final_tokens=3))
    big = {i: block_bytes_of(i) for i in range(20)}  # 10 MiB: more than the 8 MiB host tier
    cases = {
        "OutOfBlocksError": (lambda: stub.Apply(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("a", BE, 5)])),
                             Code.RESOURCE_EXHAUSTED),
        "UnknownWorkerError": (lambda: stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="ghost")), Code.NOT_FOUND),
        "UnknownCheckpointError": (lambda: stub.Restore(kvstore_pb2.RestoreRequest(request_id="half")), Code.NOT_FOUND),
        "InvalidSpecError": (lambda: stub.Apply(kvstore_pb2.ApplyRequest(worker_id="w0", leases=[lease("", BE, 1)])),
                             Code.INVALID_ARGUMENT),
        "CheckpointMismatchError": (lambda: stub.Restore(kvstore_pb2.RestoreRequest(request_id="done", dtype="float16")),
                                    Code.INVALID_ARGUMENT),
        "GeometryConflictError": (lambda: register(stub, "w0", 8), Code.ALREADY_EXISTS),
        # Last: the host tier evicts what it can before it refuses.
        "HostTierFullError": (lambda: send(stub, chunks_of("big", big, piece=1024 * KIB, final_tokens=1)),
                              Code.RESOURCE_EXHAUSTED),
    }
    seen = {name: (await _status_of(call()))[0] for name, (call, _) in cases.items()}
    assert seen == {name: code for name, (_, code) in cases.items()}


async def test_a_bug_in_the_store_is_internal_and_its_text_stays_in_the_log(
    stub: kvstore_pb2_grpc.KvStoreStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kvstore_svc.core import KvStore

    def broken(self: KvStore, worker_id: str) -> None:
        raise KeyError(f"token=hunter2 in the pool of {worker_id}")

    await register(stub, "w0", 4)
    monkeypatch.setattr(KvStore, "pool_stats", broken)
    code, details = await _status_of(stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0")))
    assert code == grpc.StatusCode.INTERNAL and details.startswith("internal error ")
    assert "hunter2" not in details and "KeyError" not in details
    assert any("hunter2" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    monkeypatch.undo()  # the server still serves
    assert (await stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0"))).num_blocks == 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cli_serves_and_stops_gracefully_on_sigterm() -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "LLMSERVE_LEASE_TTL_S": "3", "LLMSERVE_LOG_FORMAT": "text"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kvstore_svc", "--address", address, "--host-tier-gb", "0.01",
        env=env, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_healthy(address, timeout_s=20)
        async with open_channel(address) as channel:
            reply = await kvstore_pb2_grpc.KvStoreStub(channel).RegisterPool(
                kvstore_pb2.RegisterPoolRequest(worker_id="w", num_blocks=4, block_size=16, bytes_per_block=64)
            )
        assert reply.lease_ttl_ms == 3000  # from the LLMSERVE_LEASE_TTL_S fallback
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert proc.stderr is not None
        assert b"kvstore stopped" in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
