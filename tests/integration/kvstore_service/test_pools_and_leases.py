"""Pools and leases through the real KV store service: two-ended grants, atomic Apply and its
refusals, heartbeats against expiry, and the capacity stream."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from llmserve.runtime.channel import wait_healthy
from llmserve.runtime.server import ServiceServer
from llmserve.v1 import common_pb2, kvstore_pb2, kvstore_pb2_grpc
from tests.integration.kvstore_service.calls import BE, RT, FakeClock, lease, register, wait_for


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

