"""The worker's side of the KV store's host tier: checkpoint writes and drops sent in the
background, in order, and restores fetched for resumed requests. Speaks protobuf only
(server.py converts with convert.py).

Order matters: a checkpoint is built over several calls (lazy writes, then the final one at
preemption) and a drop must come after every write of its request, or a late write would leave
an incomplete checkpoint that the store never evicts. So one task sends every operation in
submission order, one `Checkpoint` stream per write (each write is a batch of blocks of one
request). A restore of a request first waits until that request's queued operations are sent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.tls import Tls
from llmserve.runtime.tracing import client_interceptors
from llmserve.v1 import kvstore_pb2, kvstore_pb2_grpc

logger = logging.getLogger(__name__)

RPC_TIMEOUT_S = 60.0
# A write's chunks, or what builds them when the sender takes the write.
_Chunks = list[kvstore_pb2.KvChunk] | Callable[[], list[kvstore_pb2.KvChunk]]


@dataclass
class CheckpointClientStats:
    """Counters since start."""

    num_writes: int = 0
    bytes_sent: int = 0
    send_ns: int = 0
    num_failed_writes: int = 0
    num_drops: int = 0
    num_restores: int = 0
    num_failed_restores: int = 0
    bytes_restored: int = 0


class KvCheckpointClient:
    """Owns a channel to the store. `start()` the sender before submitting; `close()` drains it."""

    def __init__(self, address: str, tls: Tls | None = None) -> None:
        self.address = address
        self._channel = open_channel(address, interceptors=client_interceptors(), tls=tls)
        self._stub = kvstore_pb2_grpc.KvStoreStub(self._channel)
        self._queue: asyncio.Queue[tuple[str, _Chunks | None]] = asyncio.Queue()
        self._pending: collections.Counter[str] = collections.Counter()
        self._sent = asyncio.Condition()
        self._failed: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.stats = CheckpointClientStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_forever(), name="kv-checkpoint-sender")

    def write(self, request_id: str, chunks: _Chunks) -> None:
        """Queues one Checkpoint call carrying `chunks` (all of `request_id`); a callable is
        called for them when the call is sent, so that building the messages (copies of the
        blocks' bytes) waits for the sender's turn instead of delaying the step that queued them."""
        self._pending[request_id] += 1
        self._queue.put_nowait((request_id, chunks))

    def drop(self, request_id: str) -> None:
        """Queues a DropCheckpoint, after the request's writes already queued."""
        self._pending[request_id] += 1
        self._queue.put_nowait((request_id, None))

    def take_failed(self) -> list[str]:
        """Requests whose writes the store refused since the last call (reported to the scheduler)."""
        failed, self._failed = self._failed, []
        return list(dict.fromkeys(failed))

    async def flush(self) -> None:
        """Waits until every queued operation is sent."""
        async with self._sent:
            await self._sent.wait_for(lambda: not self._pending)

    async def restore(self, request: kvstore_pb2.RestoreRequest) -> list[kvstore_pb2.KvChunk] | None:
        """The checkpoint's chunks, or None when the store has none usable (missing, evicted,
        incomplete, another dtype or shape) or cannot be reached: the caller recomputes."""
        request_id = request.request_id
        async with self._sent:
            await self._sent.wait_for(lambda: self._pending[request_id] == 0)
        try:
            chunks = [chunk async for chunk in self._stub.Restore(request, timeout=RPC_TIMEOUT_S)]
        except grpc.aio.AioRpcError as err:
            self.stats.num_failed_restores += 1
            logger.info("restore of %s refused (%s: %s): recomputing it", request_id, err.code().name, err.details())
            return None
        self.stats.num_restores += 1
        self.stats.bytes_restored += sum(len(c.data) for c in chunks)
        return chunks

    async def _send_forever(self) -> None:
        while True:
            request_id, chunks = await self._queue.get()
            try:
                if chunks is None:
                    await self._stub.DropCheckpoint(kvstore_pb2.DropCheckpointRequest(request_id=request_id),
                                                    timeout=RPC_TIMEOUT_S)
                    self.stats.num_drops += 1
                else:
                    await self._send(request_id, chunks() if callable(chunks) else chunks)
            except grpc.aio.AioRpcError as err:
                if chunks is not None:
                    self.stats.num_failed_writes += 1
                    self._failed.append(request_id)
                logger.warning("%s of %s failed: %s %s", "drop" if chunks is None else "checkpoint", request_id,
                               err.code().name, err.details())
            finally:
                self._pending[request_id] -= 1
                if self._pending[request_id] <= 0:
                    del self._pending[request_id]
                async with self._sent:
                    self._sent.notify_all()

    async def _send(self, request_id: str, chunks: Sequence[kvstore_pb2.KvChunk]) -> None:
        start = time.perf_counter_ns()
        await self._stub.Checkpoint(iter(chunks), timeout=RPC_TIMEOUT_S)
        self.stats.send_ns += time.perf_counter_ns() - start
        self.stats.num_writes += 1
        self.stats.bytes_sent += sum(len(c.data) for c in chunks)

    async def close(self) -> None:
        """Sends what is queued (bounded by the RPC timeout), then closes the channel."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self.flush(), RPC_TIMEOUT_S)
            except asyncio.TimeoutError:
                logger.warning("closing with %d checkpoint operations unsent", sum(self._pending.values()))
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._channel.close()
