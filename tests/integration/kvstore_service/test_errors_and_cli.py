"""How the KV store service fails: one error of each kind of the store's with the code of its
shared base, a bug as INTERNAL (its text only in the log), and the CLI's graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import grpc
import pytest

from llmserve.runtime.channel import open_channel, wait_healthy
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc
from tests.integration.kvstore_service.calls import (
    BE,
    BLOCK_BYTES,
    KIB,
    block_bytes_of,
    chunks_of,
    lease,
    register,
    send,
    status_of,
)

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
    seen = {name: (await status_of(call()))[0] for name, (call, _) in cases.items()}
    assert seen == {name: code for name, (_, code) in cases.items()}


async def test_a_bug_in_the_store_is_internal_and_its_text_stays_in_the_log(
    stub: kvstore_pb2_grpc.KvStoreStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kvstore_svc.core import KvStore

    def broken(self: KvStore, worker_id: str) -> None:
        raise KeyError(f"token=hunter2 in the pool of {worker_id}")

    await register(stub, "w0", 4)
    monkeypatch.setattr(KvStore, "pool_stats", broken)
    code, details = await status_of(stub.GetPoolStats(kvstore_pb2.GetPoolStatsRequest(worker_id="w0")))
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
