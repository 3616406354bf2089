"""The worker's side of the KV store: register the pool, one Apply per step, heartbeats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.tls import Tls
from llmserve.runtime.tracing import client_interceptors
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc


logger = logging.getLogger(__name__)


class KvLeaseClient:
    """Owns the channel to the store; speaks protobuf only (server.py converts). `apply` raises
    grpc.aio.AioRpcError when the store refuses (RESOURCE_EXHAUSTED: nothing was granted or
    released) or is unreachable."""

    def __init__(self, address: str, pool: kvstore_pb2.RegisterPoolRequest, tls: Tls | None = None) -> None:
        self.address = address
        self.pool = pool
        self.worker_id = pool.worker_id
        self._channel = open_channel(address, interceptors=client_interceptors(), tls=tls)
        self._stub = kvstore_pb2_grpc.KvStoreStub(self._channel)
        self._heartbeat: asyncio.Task[None] | None = None
        self.lease_ttl_s = 0.0

    async def register(self, timeout_s: float) -> float:
        """Registers (or re-attaches) the pool, waiting up to `timeout_s` for the store to come up;
        returns the lease TTL in seconds."""
        reply = await self._stub.RegisterPool(self.pool, timeout=timeout_s, wait_for_ready=True)
        self.lease_ttl_s = reply.lease_ttl_ms / 1000.0
        return self.lease_ttl_s

    async def apply(self, request: kvstore_pb2.ApplyRequest) -> kvstore_pb2.ApplyResponse:
        return await self._stub.Apply(request, timeout=30.0)

    async def release(self, request_ids: Sequence[str]) -> int:
        """Releases every listed request's blocks in one Apply; returns the blocks released."""
        if not request_ids:
            return 0
        request = kvstore_pb2.ApplyRequest(worker_id=self.worker_id, release_request_ids=list(request_ids))
        reply = await self._stub.Apply(request, timeout=30.0)
        return reply.num_released

    def start_heartbeat(self) -> None:
        """Heart-beats every TTL/3 so that no lease of a live worker expires."""
        interval = max(self.lease_ttl_s / 3.0, 0.05)
        self._heartbeat = asyncio.create_task(self._beat_forever(interval), name=f"heartbeat-{self.worker_id}")

    async def _beat_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                reply = await self._stub.Heartbeat(kvstore_pb2.HeartbeatRequest(worker_id=self.worker_id), timeout=interval)
                if not reply.known:
                    # The store forgot us (restarted, or we were silent past the TTL): our leases are
                    # gone, so running requests' blocks may be reused. Re-register so new work can lease.
                    logger.error("KV store %s no longer knows worker %s: re-registering its pool", self.address, self.worker_id)
                    await self.register(timeout_s=interval)
            except grpc.aio.AioRpcError as err:
                logger.warning("heartbeat to %s failed: %s %s", self.address, err.code().name, err.details())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            try:
                await self._heartbeat
            except asyncio.CancelledError:
                pass
        await self._channel.close()
