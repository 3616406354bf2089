"""The worker's KV leases held ahead: THE implementation, shared by the worker shell, the simulated
worker and the tests' fake worker. Pure and synchronous.

The KV store is not on a step's path: the worker leases blocks ahead of need in batches (its
*reserve*: a low part taken from the real-time end of its pool and a high part from the
best-effort end), hands them to its requests itself, and tells the store in batches (one `Sync`)
which requests now hold which blocks. Releases go back to the reserve at once. A step, after the
plan book's `admit`:

    keeper.release(delta.release_request_ids)   # their blocks back to the reserve
    low, high = keeper.shortfall(delta.leases)  # blocks the reserve lacks (usually 0, 0)
    <only then, on the step's path: sync = keeper.next_sync(now, low, high); the store's reply
     -> keeper.synced(reply)>
    grants = keeper.take(delta.leases)          # -> book.grant(grants)

and off the step's path, whenever `keeper.wants_sync(now)`: `next_sync(now)` -> the store ->
`synced(reply)`, or `sync_failed()` (unknown outcome: the same sync is sent again, and the store
answers a repeated sequence number with its first reply) or `sync_refused()` (nothing applied).

Accounting. Every block of the pool is in exactly one place: free (the store's), in the reserve,
or held by one request. The scheduler's block ledger counts only requests' blocks, so to it the
reserve is free, and it is: any class takes any reserve block (real-time from the low part first,
then the high part; deadline and best-effort the other way round), so blocks held in reserve
never make real-time work wait. The store's record lags the worker's by at most one sync;
`store_view` is the keeper's copy of the store's record (exact whenever no sync is in flight),
and a sync carries the difference: a request whose table no longer extends what the store
records is released and re-assigned whole, otherwise only its new blocks are assigned.

Sizing: each part aims at `reserve_blocks`; a part below half of it is refilled, one above twice
it is trimmed back; a step that finds the reserve short asks for its shortfall plus a full part
on each side. Lease changes reach the store within `sync_interval_s` (`wants_sync`), and a keeper
whose requests hold nothing for that long gives its whole reserve back, so an idle worker holds
no block. After the store lost the pool (restarted), `declaration()` is everything the worker
holds, which the new store takes as it is; `declared()` then makes it the store's record.

    pool (8 blocks)   [0 1 | 2 3 4 5 | 6 7]      low part 0 1, high part 6 7 (reserve_blocks 2)
    rt lease of 3  -> 0 1 from the low part, 6 from the high part (the lowest there); none asked
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmserve.plan import Grant, Holding, LeaseSpec, LeaseSync, PoolDeclaration, SyncReply, TraceContext
from llmserve.types import ServiceClass


def auto_reserve_blocks(max_num_batched_tokens: int, block_size: int, num_blocks: int) -> int:
    """The default blocks held ahead per part: one step of new tokens' worth (a prefill-heavy
    step then rarely waits for the store), at most a quarter of the pool, at least 1."""
    one_step = -(-max_num_batched_tokens // block_size)
    return max(1, min(one_step, num_blocks // 4))


@dataclass(slots=True)
class _Held:
    service_class: ServiceClass
    blocks: list[int]
    trace_context: TraceContext = ()


@dataclass(frozen=True, slots=True)
class _InFlight:
    sync: LeaseSync
    snapshot: dict[str, tuple[ServiceClass, tuple[int, ...]] | None]  # request -> its record once applied
    unreserved: tuple[tuple[bool, int], ...]  # (from the low part, block): back to the reserve if refused


@dataclass(slots=True)
class KeeperStats:
    """Counters since start (the worker exports them; benchmarks count store RPCs per step)."""

    num_syncs: int = 0  # syncs applied by the store
    num_step_syncs: int = 0  # of which a step waited for (its reserve was short)
    num_failed_syncs: int = 0  # outcome unknown (sent again)
    num_refused_syncs: int = 0  # refused by the store (nothing applied)
    num_declarations: int = 0  # pools re-declared to a store that lost them
    num_local_grants: int = 0  # leases served from the reserve without a store RPC


@dataclass(slots=True)
class LeaseKeeper:
    """One worker's reserve, its requests' blocks, and the store's record of both."""

    num_blocks: int
    reserve_blocks: int  # per part
    sync_interval_s: float
    stats: KeeperStats = field(default_factory=KeeperStats)
    _low: list[int] = field(default_factory=list)  # ascending
    _high: list[int] = field(default_factory=list)  # ascending; the high end is its tail
    _held: dict[str, _Held] = field(default_factory=dict)
    _num_held: int = 0
    _store_view: dict[str, tuple[ServiceClass, tuple[int, ...]]] = field(default_factory=dict)
    _store_reserve: set[int] = field(default_factory=set)
    _dirty: dict[str, None] = field(default_factory=dict)  # requests changed since the last sync (ordered)
    _changed_at: float | None = None  # when a change was first seen unsynced
    _idle_since: float | None = None  # since when no request holds a block
    _sequence: int = 0  # the last sync the store applied
    _inflight: _InFlight | None = None

    def __post_init__(self) -> None:
        if self.num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {self.num_blocks}")
        if self.reserve_blocks < 0 or self.sync_interval_s < 0:
            raise ValueError("reserve_blocks and sync_interval_s must be >= 0")

    # ---- queries ---------------------------------------------------------------------------------
    @property
    def num_reserved(self) -> int:
        """Blocks in the reserve (both parts)."""
        return len(self._low) + len(self._high)

    @property
    def num_held(self) -> int:
        """Blocks held by requests."""
        return self._num_held

    @property
    def num_free_at_store(self) -> int:
        """Free blocks of the pool once the store knows what the worker knows (exact: the pool is
        this worker's alone)."""
        return self.num_blocks - self.num_reserved - self._num_held

    def blocks(self, request_id: str) -> tuple[int, ...]:
        held = self._held.get(request_id)
        return tuple(held.blocks) if held is not None else ()

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(self._held)

    @property
    def pending(self) -> bool:
        """Changes the store has not been told (or a sync whose outcome is unknown)."""
        return bool(self._dirty) or self._inflight is not None

    @property
    def in_flight(self) -> LeaseSync | None:
        """The sync sent and not answered (after `sync_failed`: to send again)."""
        return self._inflight.sync if self._inflight is not None else None

    @property
    def store_view(self) -> dict[str, tuple[ServiceClass, tuple[int, ...]]]:
        """The store's leases as the keeper knows them: request -> (class, blocks)."""
        return dict(self._store_view)

    @property
    def store_reserve(self) -> frozenset[int]:
        """The store's record of the reserve."""
        return frozenset(self._store_reserve)

    # ---- a step ----------------------------------------------------------------------------------
    def release(self, request_ids: Iterable[str]) -> int:
        """The requests' blocks go back to the reserve (an unknown id is fine); returns how many."""
        released = 0
        for rid in request_ids:
            held = self._held.pop(rid, None)
            if held is None:
                continue
            part = self._low if held.service_class is ServiceClass.REAL_TIME else self._high
            for block in held.blocks:
                bisect.insort(part, block)
            released += len(held.blocks)
            self._dirty[rid] = None
        self._num_held -= released
        return released

    def shortfall(self, leases: Sequence[LeaseSpec]) -> tuple[int, int]:
        """Blocks the reserve lacks for `leases`: (from the low end, from the high end)."""
        low, high = len(self._low), len(self._high)
        short_low = short_high = 0
        for lease in leases:
            need = lease.num_blocks
            if lease.service_class is ServiceClass.REAL_TIME:
                own = min(need, low)
                other = min(need - own, high)
                low, high = low - own, high - other
                short_low += need - own - other
            else:
                own = min(need, high)
                other = min(need - own, low)
                high, low = high - own, low - other
                short_high += need - own - other
        return short_low, short_high

    def take(self, leases: Sequence[LeaseSpec]) -> tuple[Grant, ...]:
        """Serves every lease from the reserve, in order (call when `shortfall` is (0, 0); raises
        ValueError, nothing taken, otherwise, or for a class change)."""
        if self.shortfall(leases) != (0, 0):
            raise ValueError(f"the reserve ({self.num_reserved} blocks) cannot serve these leases: sync first")
        for lease in leases:
            held = self._held.get(lease.request_id)
            if held is not None and held.service_class is not lease.service_class:
                raise ValueError(f"{lease.request_id} holds {held.service_class.name} blocks, "
                                 f"asked for {lease.service_class.name}")
        grants = []
        low, high = self._low, self._high
        for lease in leases:
            need = lease.num_blocks
            if need == 0:
                grants.append(Grant(lease.request_id, ()))
                continue
            if lease.service_class is ServiceClass.REAL_TIME:  # lowest ids first
                own = min(need, len(low))
                blocks = low[:own] + high[:need - own]
                del low[:own], high[:need - own]
            else:  # highest ids first
                own = min(need, len(high))
                other = need - own
                blocks = high[len(high) - own:][::-1] + (low[len(low) - other:][::-1] if other else [])
                del high[len(high) - own:]
                if other:
                    del low[len(low) - other:]
            held = self._held.get(lease.request_id)
            if held is None:
                held = self._held[lease.request_id] = _Held(lease.service_class, [])
            held.blocks.extend(blocks)
            if lease.trace_context:
                held.trace_context = lease.trace_context
            self._dirty[lease.request_id] = None
            self._num_held += len(blocks)
            grants.append(Grant(lease.request_id, tuple(blocks)))
        self.stats.num_local_grants += len(leases)
        return tuple(grants)

    # ---- syncing with the store ------------------------------------------------------------------
    def wants_sync(self, now: float) -> bool:
        """Whether a sync is due now (off the step's path): a part to refill or trim, changes older
        than `sync_interval_s`, or an idle worker's reserve to give back. False while one is in
        flight (the caller resends a failed one on its own schedule)."""
        if self._held:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if self._dirty and self._changed_at is None:
            self._changed_at = now
        if self._inflight is not None:
            return False
        interval = self.sync_interval_s
        if not self._held:
            idle_for = now - self._idle_since if self._idle_since is not None else 0.0
            return (self.num_reserved > 0 or bool(self._dirty)) and idle_for >= interval
        target = self.reserve_blocks
        low, high = len(self._low), len(self._high)
        if low > 2 * target or high > 2 * target:
            return True
        if (2 * low < target or 2 * high < target) and self.num_free_at_store > 0:
            return True
        return self._changed_at is not None and now - self._changed_at >= interval

    def next_sync(self, now: float, must_low: int = 0, must_high: int = 0) -> LeaseSync:
        """The sync to send now: the one in flight again if its outcome is unknown, else the
        changes since the last one plus the reserve's refill or trim, asking at least `must_low`
        and `must_high` new blocks (a step's shortfall). With no request holding blocks and
        nothing asked, it gives the whole reserve back."""
        if self._inflight is not None:
            return self._inflight.sync
        releases: list[str] = []
        assignments: list[Holding] = []
        snapshot: dict[str, tuple[ServiceClass, tuple[int, ...]] | None] = {}
        for rid in self._dirty:
            held = self._held.get(rid)
            known = self._store_view.get(rid)
            start = 0
            if known is not None:
                if held is None or held.service_class is not known[0] or tuple(held.blocks[:len(known[1])]) != known[1]:
                    releases.append(rid)
                else:
                    start = len(known[1])
            if held is not None and len(held.blocks) > start:
                assignments.append(Holding(rid, held.service_class, tuple(held.blocks[start:]), held.trace_context))
            snapshot[rid] = (held.service_class, tuple(held.blocks)) if held is not None else None
        unreserved: list[tuple[bool, int]] = []
        target = self.reserve_blocks
        asking = must_low or must_high
        if not self._held and not asking:  # idle: give everything back
            unreserved = [(True, b) for b in self._low] + [(False, b) for b in self._high]
            self._low, self._high = [], []
        elif not asking:  # (a step that asks drains both parts)
            if len(self._low) > 2 * target:  # trim each part from its inner edge
                keep = target
                unreserved += [(True, b) for b in self._low[keep:]]
                del self._low[keep:]
            if len(self._high) > 2 * target:
                cut = len(self._high) - target
                unreserved += [(False, b) for b in self._high[:cut]]
                del self._high[:cut]
        free = self.num_free_at_store  # after the unreserved blocks are back
        top_low = top_high = 0
        if asking:  # the step drains both parts: refill both
            top_low = top_high = target
        elif self._held:
            top_low = target - len(self._low) if 2 * len(self._low) < target else 0
            top_high = target - len(self._high) if 2 * len(self._high) < target else 0
        room = max(0, free - must_low - must_high)
        top_low = min(top_low, room)
        top_high = min(top_high, room - top_low)
        sync = LeaseSync(self._sequence + 1, tuple(releases), tuple(assignments),
                         tuple(block for _, block in unreserved), must_low + top_low, must_high + top_high)
        self._inflight = _InFlight(sync, snapshot, tuple(unreserved))
        self._dirty = {}
        self._changed_at = None
        return sync

    def synced(self, reply: SyncReply, *, on_step_path: bool = False) -> None:
        """The store applied the sync in flight: its record is now the snapshot sent, and the new
        reserve blocks join their parts."""
        flight = self._inflight
        if flight is None or reply.sequence != flight.sync.sequence:
            raise ValueError(f"reply to sync {reply.sequence}, but {flight.sync.sequence if flight else 'none'} "
                             "is in flight")
        sync = flight.sync
        view, reserve = self._store_view, self._store_reserve
        for rid in sync.release_request_ids:
            reserve.update(view.pop(rid)[1])
        for holding in sync.assignments:
            reserve.difference_update(holding.block_ids)
        reserve.difference_update(sync.unreserve_block_ids)
        reserve.update(reply.reserved_low)
        reserve.update(reply.reserved_high)
        for rid, record in flight.snapshot.items():
            if record is None:
                view.pop(rid, None)
            else:
                view[rid] = record
        if reply.reserved_low:
            self._low = sorted([*self._low, *reply.reserved_low])
        if reply.reserved_high:
            self._high = sorted([*self._high, *reply.reserved_high])
        self._sequence = sync.sequence
        self._inflight = None
        self.stats.num_syncs += 1
        if on_step_path:
            self.stats.num_step_syncs += 1

    def sync_failed(self) -> None:
        """The sync's outcome is unknown (the store did not answer): `next_sync` sends it again."""
        self.stats.num_failed_syncs += 1

    def sync_refused(self) -> None:
        """The store refused the sync in flight (nothing applied): its changes are due again."""
        flight = self._inflight
        if flight is None:
            return
        for from_low, block in flight.unreserved:
            bisect.insort(self._low if from_low else self._high, block)
        for rid in flight.snapshot:
            self._dirty[rid] = None
        self._inflight = None
        self.stats.num_refused_syncs += 1

    # ---- a store that lost the pool --------------------------------------------------------------
    def declaration(self) -> PoolDeclaration:
        """Everything the worker holds: its requests' blocks and its reserve."""
        held = tuple(Holding(rid, h.service_class, tuple(h.blocks), h.trace_context)
                     for rid, h in self._held.items() if h.blocks)
        return PoolDeclaration(held, tuple(self._low), tuple(self._high))

    def declared(self, declaration: PoolDeclaration) -> None:
        """A new store took `declaration` (made by `declaration()`): that is now its record, and
        syncs count from 1 again. A sync in flight is forgotten (blocks it gave back were not
        declared, so they are free); requests that changed since the declaration was made (steps
        go on while it travels) are due in the next sync."""
        self._store_view = {h.request_id: (h.service_class, h.block_ids) for h in declaration.held}
        self._store_reserve = {*declaration.reserved_low, *declaration.reserved_high}
        for rid in (*self._store_view, *self._held):
            held = self._held.get(rid)
            now = (held.service_class, tuple(held.blocks)) if held is not None and held.blocks else None
            if self._store_view.get(rid) != now:
                self._dirty[rid] = None
        self._inflight = None
        self._sequence = 0
        self.stats.num_declarations += 1

    # ---- checks (tests, the simulator) -----------------------------------------------------------
    def check(self) -> None:
        """Asserts the keeper's own invariants: no block in two places, all inside the pool."""
        blocks = [*self._low, *self._high, *(b for h in self._held.values() for b in h.blocks)]
        assert len(blocks) == len(set(blocks)), "a block is in two places"
        assert all(0 <= b < self.num_blocks for b in blocks), "a block outside the pool"
        assert self._low == sorted(self._low) and self._high == sorted(self._high), "a reserve part is unsorted"
        assert self._num_held == sum(len(h.blocks) for h in self._held.values()), "held count drifted"
