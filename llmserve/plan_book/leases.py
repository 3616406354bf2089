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
reserve is free, and it is: any class takes any reserve block (`reserve.py`: real-time from the
low part first, then the high part; deadline and best-effort the other way round), so blocks held
in reserve never make real-time work wait. The store's record lags the worker's by at most one
sync; `store_view` is the keeper's copy of it, and a sync carries the difference
(`store_record.py`).

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmserve.plan import Grant, Holding, LeaseSpec, LeaseSync, PoolDeclaration, SyncReply
from llmserve.plan_book.reserve import Reserve, Unreserved
from llmserve.plan_book.store_record import Held, LeaseRecord, StoreRecord
from llmserve.types import ServiceClass


@dataclass(frozen=True, slots=True)
class _InFlight:
    sync: LeaseSync
    snapshot: dict[str, LeaseRecord | None]  # request -> its record once applied
    unreserved: tuple[Unreserved, ...]  # back to the reserve if refused


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
    _reserve: Reserve = field(init=False)
    _held: dict[str, Held] = field(default_factory=dict)
    _num_held: int = 0
    _store: StoreRecord = field(default_factory=StoreRecord)
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
        self._reserve = Reserve(self.reserve_blocks)

    # ---- queries ---------------------------------------------------------------------------------
    @property
    def num_reserved(self) -> int:
        """Blocks in the reserve (both parts)."""
        return self._reserve.size

    @property
    def num_held(self) -> int:
        """Blocks held by requests."""
        return self._num_held

    @property
    def num_free_at_store(self) -> int:
        """Free blocks of the pool once the store knows what the worker knows (exact: the pool is
        this worker's alone)."""
        return self.num_blocks - self._reserve.size - self._num_held

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
    def store_view(self) -> dict[str, LeaseRecord]:
        """The store's leases as the keeper knows them: request -> (class, blocks)."""
        return dict(self._store.leases)

    @property
    def store_reserve(self) -> frozenset[int]:
        """The store's record of the reserve."""
        return frozenset(self._store.reserve)

    # ---- a step ----------------------------------------------------------------------------------
    def release(self, request_ids: Iterable[str]) -> int:
        """The requests' blocks go back to the reserve (an unknown id is fine); returns how many."""
        released = 0
        for rid in request_ids:
            held = self._held.pop(rid, None)
            if held is None:
                continue
            self._reserve.put_back(held.service_class, held.blocks)
            released += len(held.blocks)
            self._dirty[rid] = None
        self._num_held -= released
        return released

    def _requests_hold(self) -> bool:
        """Whether a request holds blocks (an idle worker gives its reserve back)."""
        return bool(self._held)

    def shortfall(self, leases: Sequence[LeaseSpec]) -> tuple[int, int]:
        """Blocks the reserve lacks for `leases`: (from the low end, from the high end)."""
        return self._reserve.shortfall(leases)

    def take(self, leases: Sequence[LeaseSpec]) -> tuple[Grant, ...]:
        """Serves every lease from the reserve, in order (call when `shortfall` is (0, 0); raises
        ValueError, nothing taken, otherwise, or for a class change)."""
        if self._reserve.shortfall(leases) != (0, 0):
            raise ValueError(f"the reserve ({self.num_reserved} blocks) cannot serve these leases: sync first")
        for lease in leases:
            held = self._held.get(lease.request_id)
            if held is not None and held.service_class is not lease.service_class:
                raise ValueError(f"{lease.request_id} holds {held.service_class.name} blocks, "
                                 f"asked for {lease.service_class.name}")
        grants = []
        for lease in leases:
            if lease.num_blocks == 0:
                grants.append(Grant(lease.request_id, ()))
                continue
            blocks = self._reserve.take(lease.service_class, lease.num_blocks)
            held = self._held.get(lease.request_id)
            if held is None:
                held = self._held[lease.request_id] = Held(lease.service_class, [])
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
        if self._requests_hold():
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if self._dirty and self._changed_at is None:
            self._changed_at = now
        if self._inflight is not None:
            return False
        interval = self.sync_interval_s
        if not self._requests_hold():
            idle_for = now - self._idle_since if self._idle_since is not None else 0.0
            return (self.num_reserved > 0 or bool(self._dirty)) and idle_for >= interval
        if self._reserve.out_of_shape(can_grow=self.num_free_at_store > 0):
            return True
        return self._changed_at is not None and now - self._changed_at >= interval

    def next_sync(self, now: float, must_low: int = 0, must_high: int = 0) -> LeaseSync:
        """The sync to send now: the one in flight again if its outcome is unknown, else the
        changes since the last one plus the reserve's refill or trim, asking at least `must_low`
        and `must_high` new blocks (a step's shortfall). With no request holding blocks and
        nothing asked, it gives the whole reserve back."""
        if self._inflight is not None:
            return self._inflight.sync
        changes = self._store.changes(self._dirty, self._held)
        reserve = self._reserve
        asking = must_low or must_high
        unreserved: list[Unreserved] = []
        if not self._requests_hold() and not asking:  # idle: give everything back
            unreserved = reserve.give_all_back()
        elif not asking:  # (a step that asks drains both parts)
            unreserved = reserve.trim()
        top_low = top_high = 0
        if asking:  # the step drains both parts: refill both
            top_low = top_high = reserve.target
        elif self._requests_hold():
            top_low, top_high = reserve.refill()
        room = max(0, self.num_free_at_store - must_low - must_high)  # after the unreserved are back
        top_low = min(top_low, room)
        top_high = min(top_high, room - top_low)
        sync = LeaseSync(self._sequence + 1, changes.releases, changes.assignments,
                         tuple(block for _, block in unreserved), must_low + top_low, must_high + top_high)
        self._inflight = _InFlight(sync, changes.snapshot, tuple(unreserved))
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
        self._store.applied(flight.sync, reply, flight.snapshot)
        self._reserve.add(reply.reserved_low, reply.reserved_high)
        self._sequence = flight.sync.sequence
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
        self._reserve.restore(flight.unreserved)
        for rid in flight.snapshot:
            self._dirty[rid] = None
        self._inflight = None
        self.stats.num_refused_syncs += 1

    # ---- a store that lost the pool --------------------------------------------------------------
    def declaration(self) -> PoolDeclaration:
        """Everything the worker holds: its requests' blocks and its reserve."""
        held = tuple(Holding(rid, h.service_class, tuple(h.blocks), h.trace_context)
                     for rid, h in self._held.items() if h.blocks)
        return PoolDeclaration(held, tuple(self._reserve.low), tuple(self._reserve.high))

    def declared(self, declaration: PoolDeclaration) -> None:
        """A new store took `declaration` (made by `declaration()`): that is now its record, and
        syncs count from 1 again. A sync in flight is forgotten (blocks it gave back were not
        declared, so they are free); requests that changed since the declaration was made (steps
        go on while it travels) are due in the next sync."""
        self._store = StoreRecord.of_declaration(declaration)
        for rid in (*self._store.leases, *self._held):
            held = self._held.get(rid)
            now = (held.service_class, tuple(held.blocks)) if held is not None and held.blocks else None
            if self._store.leases.get(rid) != now:
                self._dirty[rid] = None
        self._inflight = None
        self._sequence = 0
        self.stats.num_declarations += 1

    # ---- checks (tests, the simulator) -----------------------------------------------------------
    def check(self) -> None:
        """Asserts the keeper's own invariants: no block in two places, all inside the pool."""
        low, high = self._reserve.low, self._reserve.high
        blocks = [*low, *high, *(b for h in self._held.values() for b in h.blocks)]
        assert len(blocks) == len(set(blocks)), "a block is in two places"
        assert all(0 <= b < self.num_blocks for b in blocks), "a block outside the pool"
        assert low == sorted(low) and high == sorted(high), "a reserve part is unsorted"
        assert self._num_held == sum(len(h.blocks) for h in self._held.values()), "held count drifted"
