"""The worker's side of the KV store's block pools: it registers the pool, serves each step's
leases from the blocks it holds ahead (`LeaseKeeper`, llmserve/plan_book/leases.py), keeps the
store's record in step with batched syncs off the step's path, heart-beats, and when the store has
lost the pool (it restarted, or the worker was silent past the TTL) re-declares everything it
holds in one RegisterPool, so the new store is rebuilt from the worker.

A step waits for the store only when its leases need more blocks than the worker holds ahead;
if the store cannot be reached then, the step fails (the caller reports KV_UNAVAILABLE) and every
other step goes on. Store calls about the pool go one at a time (`_lock`); the keeper's local
changes never wait for them. Messages are built and read by `convert` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from llmserve.plan import Grant, KvDelta
from llmserve.plan_book import CachingLeaseKeeper, LeaseKeeper
from llmserve.runtime.channel import open_channel
from llmserve.runtime.tls import Tls
from llmserve.runtime.tracing import client_interceptors
from llmserve.v1 import kvstore_pb2_grpc
from worker_svc import convert
from worker_svc.core.types import WorkerDescription

logger = logging.getLogger(__name__)

# A step's own store call: fail fast rather than stall the step (the scheduler retries it).
STEP_RPC_TIMEOUT_S = 10.0
# While the store is unreachable, how often the worker tries again (calls fail fast, so cheap).
OUTAGE_RETRY_S = 0.25
# Answers that say the store may not have applied a sync, or could not be reached.
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN})
# Answers that say the store no longer has the pool the worker knows (restarted, or expired).
_POOL_LOST = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION})


@dataclass
class LeaseClientStats:
    """Store RPCs about the pool, since start (the keeper counts syncs by kind)."""

    num_heartbeats: int = 0
    num_background_syncs: int = 0
    num_unreachable: int = 0  # calls that found the store unreachable
    num_store_restarts: int = 0  # new store incarnations seen


class KvLeaseClient:
    """Owns the channel to the store and the worker's `LeaseKeeper`. `lease` raises
    grpc.aio.AioRpcError when a step needs the store and it refuses (nothing was leased) or cannot
    be reached."""

    def __init__(self, address: str, description: WorkerDescription, keeper: LeaseKeeper,
                 clock: Callable[[], float] = time.monotonic, tls: Tls | None = None) -> None:
        self.address = address
        self.description = description
        self.worker_id = description.worker_id
        self.keeper = keeper
        self.stats = LeaseClientStats()
        self.lease_ttl_s = 0.0
        self.incarnation = ""  # the store's, as last seen
        self.reachable = True
        self._on_store_restarted: Callable[[], None] = lambda: None
        self._clock = clock
        self._channel = open_channel(address, interceptors=client_interceptors(), tls=tls)
        self._stub = kvstore_pb2_grpc.KvStoreStub(self._channel)
        self._lock = asyncio.Lock()
        self._last_contact = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None

    # ---- start --------------------------------------------------------------------------------
    async def register(self, timeout_s: float) -> float:
        """Registers the (empty) pool, waiting up to `timeout_s` for the store to come up; returns
        the lease TTL in seconds."""
        reply = await self._stub.RegisterPool(convert.register_pool_request(self.description), timeout=timeout_s,
                                              wait_for_ready=True)
        self.lease_ttl_s = convert.lease_ttl_s(reply)
        self.incarnation = convert.store_incarnation(reply)
        self._last_contact = self._clock()
        return self.lease_ttl_s

    def set_on_store_restarted(self, callback: Callable[[], None]) -> None:
        """`callback()` runs when a re-declaration finds a new store incarnation (its host tier is empty)."""
        self._on_store_restarted = callback

    def start_heartbeat(self) -> None:
        """Renews the leases (a sync when one is due, else a Heartbeat) every TTL/3, tries again
        every OUTAGE_RETRY_S while the store is unreachable, and gives an idle worker's reserve
        back after `sync_interval_s`."""
        self._heartbeat = asyncio.create_task(self._beat_forever(), name=f"kv-heartbeat-{self.worker_id}")

    # ---- a step -------------------------------------------------------------------------------
    async def lease(self, delta: KvDelta) -> tuple[tuple[Grant, ...], int]:
        """Releases the delta's requests and grants its leases from the blocks held ahead; asks
        the store first only for what those lack. Returns the grants and the store RPCs waited for."""
        keeper = self.keeper
        keeper.release(delta.release_request_ids)
        if isinstance(keeper, CachingLeaseKeeper):  # what the store cannot give: from the cache, locally
            keeper.reclaim_cached(delta.leases)
        rpcs = attempts = 0
        while keeper.shortfall(delta.leases) != (0, 0):
            async with self._lock:  # a sync in the background may have refilled the reserve meanwhile
                must = keeper.shortfall(delta.leases)
                if must == (0, 0):
                    break
                # At most: a sync of unknown outcome, one that finds the pool lost, the step's own.
                if attempts >= 3:
                    raise RuntimeError(f"the KV store answered {attempts} syncs without the blocks {must} the "
                                       "step needs")
                attempts += 1
                rpcs += await self._sync(*must, timeout_s=STEP_RPC_TIMEOUT_S, on_step_path=True)
        return keeper.take(delta.leases), rpcs

    def after_step(self) -> None:
        """Starts a sync in the background when one is due (never on the step's path)."""
        if self._background is not None and not self._background.done():
            return
        if self._lock.locked() or not self.keeper.wants_sync(self._clock()):
            return
        self._background = asyncio.create_task(self._sync_in_background(), name=f"kv-sync-{self.worker_id}")

    async def release_all(self, request_ids: tuple[str, ...]) -> int:
        """The Execute stream closed: releases every request and gives the reserve back, in one
        sync; returns the blocks released."""
        released = self.keeper.release(request_ids)
        if isinstance(self.keeper, CachingLeaseKeeper):  # the next scheduler starts with an empty mirror
            self.keeper.drop_cache()
        async with self._lock:
            await self._sync(timeout_s=STEP_RPC_TIMEOUT_S)
            if self.keeper.num_reserved:  # a retried sync went first: now the give-back
                await self._sync(timeout_s=STEP_RPC_TIMEOUT_S)
        return released

    # ---- talking to the store (the lock held) -------------------------------------------------
    async def _sync(self, must_low: int = 0, must_high: int = 0, *, timeout_s: float,
                    on_step_path: bool = False) -> int:
        """Sends the keeper's next sync (the one of unknown outcome first) and applies the reply.
        A store that lost the pool gets the worker's declaration and the sync is not retried
        here (the caller asks again). Returns the RPCs made; raises AioRpcError when it failed."""
        keeper = self.keeper
        sync = keeper.next_sync(self._clock(), must_low, must_high)
        try:
            reply = await self._stub.Sync(convert.sync_request(self.worker_id, sync), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code in UNREACHABLE_CODES:
                keeper.sync_failed()
                self._unreachable(err)
            elif code in _POOL_LOST:
                logger.warning("KV store %s lost worker %s's pool (%s): re-declaring what it holds", self.address,
                               self.worker_id, err.details())
                await self._redeclare(timeout_s)
                return 2
            else:
                keeper.sync_refused()
            raise
        keeper.synced(convert.sync_reply_from_proto(reply), on_step_path=on_step_path)
        self._contact()
        return 1

    async def _redeclare(self, timeout_s: float) -> None:
        """Rebuilds the worker's pool in a store that lost it, from everything the worker holds."""
        declaration = self.keeper.declaration()
        try:
            reply = await self._stub.RegisterPool(convert.register_pool_request(self.description, declaration),
                                                  timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() in UNREACHABLE_CODES:
                self._unreachable(err)
            raise
        self.keeper.declared(declaration)
        self.lease_ttl_s = convert.lease_ttl_s(reply)
        incarnation = convert.store_incarnation(reply)
        logger.warning("KV store %s rebuilt worker %s's pool: %d requests hold %d blocks, %d reserved", self.address,
                       self.worker_id, len(declaration.held), sum(len(h.block_ids) for h in declaration.held),
                       len(declaration.reserved_low) + len(declaration.reserved_high))
        self._contact()
        if incarnation != self.incarnation:
            self.incarnation = incarnation
            self.stats.num_store_restarts += 1
            self._on_store_restarted()

    async def _sync_in_background(self) -> None:
        try:
            async with self._lock:
                if self.keeper.in_flight is not None or self.keeper.wants_sync(self._clock()):
                    self.stats.num_background_syncs += 1
                    await self._sync(timeout_s=STEP_RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            if err.code() not in UNREACHABLE_CODES:
                logger.error("background sync of worker %s's leases refused: %s %s", self.worker_id,
                             err.code().name, err.details())

    async def _beat_forever(self) -> None:
        while True:
            ttl_third = max(self.lease_ttl_s / 3.0, 0.05)
            tick = min(ttl_third, max(self.keeper.sync_interval_s, 0.05))
            await asyncio.sleep(tick if self.reachable else min(tick, OUTAGE_RETRY_S))
            try:
                async with self._lock:
                    keeper = self.keeper
                    if keeper.in_flight is not None or keeper.wants_sync(self._clock()):
                        await self._sync(timeout_s=ttl_third)
                    elif not self.reachable or self._clock() - self._last_contact >= ttl_third:
                        await self._heartbeat_once(ttl_third)
            except grpc.aio.AioRpcError as err:
                if err.code() not in UNREACHABLE_CODES:
                    logger.error("lease renewal of worker %s failed: %s %s", self.worker_id, err.code().name,
                                 err.details())

    async def _heartbeat_once(self, timeout_s: float) -> None:
        try:
            reply = await self._stub.Heartbeat(convert.heartbeat_request(self.worker_id), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() in UNREACHABLE_CODES:
                self._unreachable(err)
            raise
        self.stats.num_heartbeats += 1
        if convert.heartbeat_known(reply):
            self._contact()
        else:
            # The store forgot the pool (restarted, or the leases expired): rebuild it from what
            # the worker holds, so running requests keep their blocks and nothing is leased twice.
            logger.warning("KV store %s no longer knows worker %s: re-declaring its pool", self.address,
                           self.worker_id)
            await self._redeclare(timeout_s)

    def _contact(self) -> None:
        self._last_contact = self._clock()
        if not self.reachable:
            logger.warning("KV store %s is reachable again", self.address)
            self.reachable = True

    def _unreachable(self, err: grpc.aio.AioRpcError) -> None:
        self.stats.num_unreachable += 1
        if self.reachable:
            logger.warning("KV store %s unreachable (%s): serving from the %d blocks held ahead until it is back",
                           self.address, err.code().name, self.keeper.num_reserved)
            self.reachable = False

    async def close(self) -> None:
        for task in (self._heartbeat, self._background):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, grpc.aio.AioRpcError):
                    pass
        await self._channel.close()
