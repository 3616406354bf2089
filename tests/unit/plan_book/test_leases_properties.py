"""Stateful property test of the lease keeper against the KV store's lease table: any sequence of
steps (releases, then leases that fit the pool, as the scheduler's ledger guarantees), syncs off
the step's path and on it, syncs whose request or reply is lost (sent again), store restarts
(the worker re-declares what it holds) and worker deaths (the TTL expires) keeps: no block in two
places on either side, none lost (free + reserved + leased is the pool), the store's record is
exactly the keeper's copy of it whenever no sync is in flight, and exactly the worker's own state
once everything is synced; a dead worker's blocks all come back; a fully released worker ends
with the store's pool idle."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import LeaseSpec
from llmserve.plan_book import LeaseKeeper
from llmserve.types import ServiceClass

TTL = 5.0
W = "w"
REQUESTS = tuple(f"r{i}" for i in range(6))
CLASSES = (ServiceClass.REAL_TIME, ServiceClass.DEADLINE, ServiceClass.BEST_EFFORT)


class KeeperAndStore(RuleBasedStateMachine):
    @initialize(num_blocks=st.integers(1, 24), reserve=st.integers(0, 5), interval=st.sampled_from([0.0, 0.3, 2.0]))
    def start(self, num_blocks: int, reserve: int, interval: float) -> None:
        self.now = 0.0
        self.num_blocks = num_blocks
        self.reserve = reserve
        self.interval = interval
        self.store = LeaseTable(TTL)
        self.store.register_pool(W, num_blocks, 4, 1, self.now)
        self.keeper = LeaseKeeper(num_blocks, reserve, interval)
        self.classes: dict[str, ServiceClass] = {}  # the class of each request holding blocks
        self.store_up = True

    # ---- the worker's side -----------------------------------------------------------------
    @rule(releases=st.lists(st.sampled_from(REQUESTS), max_size=3, unique=True),
          wants=st.lists(st.tuples(st.sampled_from(REQUESTS), st.sampled_from(CLASSES), st.integers(0, 6)),
                         max_size=3, unique_by=lambda w: w[0]))
    def step(self, releases: list[str], wants: list[tuple[str, ServiceClass, int]]) -> None:
        keeper = self.keeper
        keeper.release(releases)
        for rid in releases:
            self.classes.pop(rid, None)
        room = self.num_blocks - keeper.num_held  # the ledger never plans past the pool
        leases = []
        for rid, cls, n in wants:
            cls = self.classes.get(rid, cls)  # a request keeps its class
            n = min(n, room)
            room -= n
            leases.append(LeaseSpec(rid, cls, n))
        for attempt in range(3):  # a sync of unknown outcome goes first, then the step's own
            must = keeper.shortfall(leases)
            if must == (0, 0):
                break
            assert attempt < 2, "a step sync must cover the shortfall"
            if not self.store_up or not self._send(keeper.next_sync(self.now, *must), on_step_path=True):
                return  # the step fails (KV_UNAVAILABLE); its releases stand
        for grant, lease in zip(keeper.take(leases), leases, strict=True):
            assert len(grant.block_ids) == lease.num_blocks
            if lease.num_blocks:
                self.classes[lease.request_id] = lease.service_class

    @rule(fault=st.sampled_from(["none", "none", "request_lost", "reply_lost"]), force=st.booleans())
    def background_sync(self, fault: str, force: bool) -> None:
        keeper = self.keeper
        if not (force or keeper.in_flight is not None or keeper.wants_sync(self.now)) or not self.store_up:
            return
        self._send(keeper.next_sync(self.now), fault=fault)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        if self.store_up:
            self.store.heartbeat(W, self.now)  # the worker heart-beats throughout

    # ---- the store's side ------------------------------------------------------------------
    @rule()
    def store_dies(self) -> None:
        self.store_up = False

    @precondition(lambda self: not self.store_up)
    @rule(release=st.sampled_from((None, *REQUESTS)), take=st.tuples(st.sampled_from(REQUESTS),
                                                                      st.sampled_from(CLASSES), st.integers(0, 3)))
    def store_restarts_and_the_worker_redeclares(self, release: str | None = None,
                                                 take: tuple[str, ServiceClass, int] = ("", CLASSES[0], 0)) -> None:
        self.store = LeaseTable(TTL)
        declaration = self.keeper.declaration()
        # While the declaration travels, a step goes on from the reserve.
        if release is not None:
            self.keeper.release([release])
            self.classes.pop(release, None)
        rid, cls, n = take
        lease = [LeaseSpec(rid, self.classes.get(rid, cls), n)]
        if n and self.keeper.shortfall(lease) == (0, 0):
            self.keeper.take(lease)
            self.classes[rid] = lease[0].service_class
        self.store.register_pool(W, self.num_blocks, 4, 1, self.now, declaration=declaration)
        self.keeper.declared(declaration)
        self.store_up = True

    @precondition(lambda self: self.store_up)
    @rule()
    def worker_dies(self) -> None:
        self.now += TTL + 1.0
        assert self.store.expire(self.now) == [W]
        record = self.store.worker(W)
        assert record.pool.num_free == self.num_blocks and not record.leases and not record.reserve
        # A new worker process with the same id starts empty.
        self.store.register_pool(W, self.num_blocks, 4, 1, self.now)
        self.keeper = LeaseKeeper(self.num_blocks, self.reserve, self.interval)
        self.classes = {}

    # ---- helpers ---------------------------------------------------------------------------
    def _send(self, sync, fault: str = "none", on_step_path: bool = False) -> bool:
        if fault == "request_lost":
            self.keeper.sync_failed()
            return False
        reply = self.store.sync(W, sync, self.now)
        if fault == "reply_lost":
            self.keeper.sync_failed()
            return False
        self.keeper.synced(reply, on_step_path=on_step_path)
        return True

    def _assert_store_is_the_worker(self) -> None:
        keeper, record = self.keeper, self.store.worker(W)
        held = {rid: (self.classes[rid], keeper.blocks(rid)) for rid in keeper.request_ids if keeper.blocks(rid)}
        assert {rid: (lease.service_class, tuple(lease.block_ids)) for rid, lease in record.leases.items()} == held
        assert set(record.reserve) == set(keeper.store_reserve) and len(record.reserve) == keeper.num_reserved

    # ---- invariants ------------------------------------------------------------------------
    @invariant()
    def no_block_in_two_places_and_none_lost(self) -> None:
        self.keeper.check()
        record = self.store.worker(W)
        leased = [b for lease in record.leases.values() for b in lease.block_ids]
        assert len(leased) == len(set(leased)) and not set(leased) & set(record.reserve)
        assert record.pool.num_free + len(record.reserve) + len(leased) == self.num_blocks
        assert all(record.pool.end_of(b) is not None for b in (*leased, *record.reserve))

    @invariant()
    def the_store_is_the_keepers_copy(self) -> None:
        if not self.store_up or self.keeper.in_flight is not None:
            return
        record = self.store.worker(W)
        assert {rid: (lease.service_class, tuple(lease.block_ids))
                for rid, lease in record.leases.items()} == self.keeper.store_view
        assert set(record.reserve) == self.keeper.store_reserve
        # The pool is the worker's alone: the store's free count is what the worker does not hold.
        assert record.pool.num_free == self.keeper.num_free_at_store
        if not self.keeper.pending:
            self._assert_store_is_the_worker()

    def teardown(self) -> None:
        if not hasattr(self, "keeper"):
            return
        if not self.store_up:
            self.store_restarts_and_the_worker_redeclares()
        keeper = self.keeper
        keeper.release(keeper.request_ids)
        for _ in range(3):
            if not keeper.pending and not keeper.num_reserved:
                break
            self._send(keeper.next_sync(self.now))
        record = self.store.worker(W)
        assert (record.pool.num_free, len(record.leases), len(record.reserve)) == (self.num_blocks, 0, 0)


TestKeeperAndStore = KeeperAndStore.TestCase
TestKeeperAndStore.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
