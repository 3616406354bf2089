"""Stateful property test of the worker's prefix cache as the live worker runs it: the plan book
(hits start block tables, computed prompt blocks are named), the caching lease keeper (cached
blocks outlive their request in the cache's lease, reclaimed before the store is asked) and the
KV store's lease table, driven by plans whose hits are claimed from a mirror of the worker's
reports that lags by any number of steps (so claims can be stale), over admissions, prefill
chunks, decodes, finishes, preemptions, failed steps and the stream closing (the worker drops
everything). The KV itself is modelled: each step writes its tokens into the blocks its chunk
covers. After every step: every live request reads exactly its own tokens from its blocks (so no
block it references was freed, handed out or overwritten), every cached block still holds the
tokens its hash names, the index's counts are exact, no block is in two places on either side,
and the store's record is the worker's; the store never refuses a step that the scheduler's
ledger admitted (an unreferenced cached block is free space). Tenants with different salts never
hit each other's blocks.

With a host tier (a few blocks, or none): the cache's evictions demote blocks into it and hits run
on into it (promotions into fresh blocks). The mover copies the modelled KV, and a block handed
out holds garbage once its demotion (if any) has been copied out, so a promotion that copied
nothing, or a demotion copied after its block was reused, reads wrong tokens. After every step:
every host block holds exactly the tokens its hash names, no hash is in both tiers, the tier is
within its capacity, and the mirror (cached, demoted, evicted reports) is exactly the two tiers.
Requests resumed from a checkpoint (restored into private blocks, past a claimed hit when there is
one: the hit's shared blocks are never written) name their blocks too; a hash the host tier held
is then dropped from it."""

from __future__ import annotations

import collections

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvstore_svc.core.lease_table import LeaseTable
from llmserve.plan import BatchPlan, NewRequest, ScheduledRequest
from llmserve.plan_book import CachingLeaseKeeper, PlanBook, PlanLimits, WorkerPrefixCache
from llmserve.prefix import chain_from_tokens, max_cached_blocks, tenant_salt
from llmserve.prefix.host_tier import HostPrefixTier
from llmserve.types import SamplingParams, ServiceClass, cdiv

BS = 4
W = "w"
SALTS = (tenant_salt("t1"), tenant_salt("t2"))
FAMILIES = tuple(tuple(range(100 * f, 100 * f + 40)) for f in range(3))  # shared prompt prefixes
CLASSES = (ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT)


def token_of(rid: str, index: int) -> int:
    return 1000 + hash((rid, index)) % 97


class WorkerWithCache(RuleBasedStateMachine):
    @initialize(num_blocks=st.integers(12, 40), reserve=st.integers(0, 4), host_blocks=st.integers(0, 8))
    def start(self, num_blocks: int, reserve: int, host_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.reserve = reserve
        self.host_blocks = host_blocks
        self.store = LeaseTable(ttl_s=1e9)
        self.store.register_pool(W, num_blocks, BS, 1, 0.0)
        self._new_worker()
        self.serial = 0
        self.step_id = 0

    def _new_worker(self) -> None:
        self.cache = WorkerPrefixCache(BS, HostPrefixTier(self.host_blocks), mover=self)
        self.granted_now: set[int] = set()
        self.host_named: dict[int, tuple[int, ...]] = {}  # hash -> the tokens of the host block it names
        self.book = PlanBook(BS, PlanLimits(64, 16, 64), prefix=self.cache)
        self.keeper = CachingLeaseKeeper(self.num_blocks, self.reserve, 0.0, prefix=self.cache)
        self.kv: dict[int, list[int | None]] = {}  # block -> its token slots (the modelled KV)
        self.named: dict[int, tuple[int, ...]] = {}  # hash -> the tokens of the block it names
        self.mirror: set[int] = set()  # the scheduler's, from the reports it was delivered
        self.reports: collections.deque = collections.deque()
        self.salts: dict[str, int] = {}
        self.want: dict[str, int] = {}  # running request -> blocks the ledger charges it
        self.gone: list[str] = []  # finished or preempted, for the next plan
        self.sampled: dict[str, int] = {}

    # ---- the scheduler's side -----------------------------------------------------------------
    # ---- the KV mover (the modelled KV) -------------------------------------------------------
    def copy_out(self, block_ids: list[int]) -> list[tuple[int | None, ...]]:
        out = [tuple(self.kv.get(b, [None] * BS)) for b in block_ids]
        for b in block_ids:  # copied out: a block handed out this step is garbage from now on
            if b in self.granted_now:
                self.kv[b] = [None] * BS
        return out

    def copy_in(self, block_ids: list[int], payloads: list[tuple[int | None, ...]]) -> None:
        assert len(block_ids) == len(payloads)
        for b, payload in zip(block_ids, payloads):
            assert None not in payload, "a promotion of a block never copied out"
            self.kv[b] = list(payload)

    def _claim(self, prompt: tuple[int, ...], salt: int) -> int:
        chain = chain_from_tokens(prompt, BS, salt)
        n = 0
        while n < min(len(chain), max_cached_blocks(len(prompt), BS)) and chain[n] in self.mirror:
            n += 1
        return n * BS

    @rule(family=st.integers(0, 2), length=st.integers(1, 36), tail=st.lists(st.integers(0, 3), max_size=3),
          tenant=st.integers(0, 1), cls=st.sampled_from(CLASSES), chunk=st.integers(1, 24),
          others=st.booleans(), lag=st.integers(0, 3))
    def admit(self, family: int, length: int, tail: list[int], tenant: int, cls: ServiceClass, chunk: int,
              others: bool, lag: int) -> None:
        self.deliver(lag)
        prompt = FAMILIES[family][:length] + tuple(tail)
        salt = SALTS[tenant]
        rid = f"r{self.serial}"
        self.serial += 1
        cached = self._claim(prompt, salt)
        num = min(chunk, len(prompt) - cached)
        need = cdiv(cached + num, BS)  # the ledger charges the cached prefix too
        if sum(self.want.values()) + need > self.num_blocks:
            return
        new = NewRequest(rid, prompt, len(prompt), SamplingParams(max_tokens=8, seed=1), cls, 0, cached,
                         num_cached_tokens=cached, prefix_salt=salt)
        self.salts[rid] = salt
        self.want[rid] = need
        scheduled = [ScheduledRequest(rid, num, cached, cached + num == len(prompt))]
        if others:
            scheduled += self._continue(exclude={rid}, budget=64 - num)
        self._step(BatchPlan(self.step_id, (new,), tuple(scheduled)))

    @rule(extra=st.integers(1, 6), claim=st.none() | st.tuples(st.integers(0, 2), st.integers(8, 36)))
    def pressure(self, extra: int, claim: tuple[int, int] | None) -> None:
        """A request of no tenant needs more blocks than the store has free: the cache gives way
        (behind the mirror), it finishes, and maybe a request claims from the mirror at once, its
        reports undelivered (a claim that may be stale)."""
        blocks = min(self.keeper.num_free_at_store + self.keeper.num_reserved + extra,
                     self.num_blocks - sum(self.want.values()), 16)
        if blocks < 1:
            return
        rid = f"hog{self.serial}"
        self.serial += 1
        prompt = tuple(500 + k for k in range(blocks * BS))
        self.salts[rid] = 0
        self.want[rid] = blocks
        new = NewRequest(rid, prompt, len(prompt), SamplingParams(max_tokens=1, seed=1), ServiceClass.REAL_TIME)
        self._step(BatchPlan(self.step_id, (new,), (ScheduledRequest(rid, len(prompt), 0, True),)))
        self.gone.append(rid)
        self.want.pop(rid)
        self._step(BatchPlan(self.step_id, (), (), finished_request_ids=(rid,)))
        if claim is not None:
            self.admit(claim[0], claim[1], [], 0, ServiceClass.BEST_EFFORT, 24, False, lag=len(self.reports))

    def _continue(self, exclude: set[str] = frozenset(), budget: int = 64) -> list[ScheduledRequest]:  # type: ignore[assignment]
        """Work for the running requests within the step's token budget (PlanLimits: 64)."""
        out = []
        for rid, state in self.book.states.items():
            if rid in exclude or rid in self.gone:
                continue
            known = len(state.token_ids)
            num = min(8, known - state.num_computed, budget)
            if num < 1:
                break
            budget -= num
            need = cdiv(state.num_computed + num, BS)
            if sum(self.want.values()) - self.want[rid] + need > self.num_blocks:
                continue
            self.want[rid] = max(self.want[rid], need)
            out.append(ScheduledRequest(rid, num, state.num_computed, state.num_computed + num == known))
        return out

    @rule(family=st.integers(0, 2), length=st.integers(5, 36), tenant=st.integers(0, 1), lag=st.integers(0, 3),
          hit=st.booleans())
    def resume(self, family: int, length: int, tenant: int, lag: int, hit: bool) -> None:
        """A request re-admitted from its checkpoint: restored into private blocks, its prompt
        then named where its hashes are not on the device (dropped from the host tier); with
        `hit`, past the prefix the mirror says is cached (shared, not written; a stale claim's
        lost blocks come from the checkpoint)."""
        self.deliver(lag)
        prompt = FAMILIES[family][:length]
        computed = (len(prompt) - 1) // BS * BS
        need = cdiv(len(prompt), BS)
        if computed < BS or sum(self.want.values()) + need > self.num_blocks:
            return
        rid = f"c{self.serial}"
        self.serial += 1
        salt = SALTS[tenant]
        cached = min(self._claim(prompt, salt), computed - BS) if hit else 0
        new = NewRequest(rid, prompt, len(prompt), SamplingParams(max_tokens=8, seed=1), ServiceClass.BEST_EFFORT, 0,
                         computed, num_cached_tokens=cached, prefix_salt=salt)
        self.salts[rid] = salt
        self.want[rid] = need
        self._step(BatchPlan(self.step_id, (new,), (ScheduledRequest(rid, len(prompt) - computed, computed, True),)))

    @rule()
    def step(self) -> None:
        self._step(BatchPlan(self.step_id, (), tuple(self._continue())))

    @precondition(lambda self: bool(self.book.states))
    @rule(data=st.data(), preempt=st.booleans())
    def drop_one(self, data: st.DataObject, preempt: bool) -> None:
        rid = data.draw(st.sampled_from(sorted(self.book.request_ids)))
        self.gone.append(rid)
        self.want.pop(rid, None)
        plan = BatchPlan(self.step_id, (), (), finished_request_ids=() if preempt else (rid,),
                         preempted_request_ids=(rid,) if preempt else ())
        self._step(plan)

    def deliver(self, lag: int) -> None:
        """The scheduler reads results: all but the last `lag` reports reach its mirror."""
        while len(self.reports) > lag:
            cached, evicted, demoted = self.reports.popleft()
            self.mirror |= set(cached) | set(demoted)
            self.mirror -= set(evicted)

    @rule()
    def stream_closes(self) -> None:
        """The scheduler goes: the worker drops every request and its cache, and gives back all."""
        ids = self.book.reset()
        self.keeper.release(ids)
        self.keeper.drop_cache()
        for _ in range(2):
            self._sync()
        pool = self.store.worker(W).pool
        assert pool.num_free == self.num_blocks, "blocks outlived the stream"
        assert self.cache.index.num_cached == 0 and self.keeper.num_held == 0
        assert self.cache.host_tier is None or len(self.cache.host_tier) == 0, "the host tier outlived the stream"
        self._new_worker_state_after_reset()

    def _new_worker_state_after_reset(self) -> None:
        self.want.clear()
        self.gone.clear()
        self.mirror.clear()
        self.reports.clear()
        self.kv.clear()
        self.named.clear()
        self.host_named.clear()

    # ---- the worker's side --------------------------------------------------------------------
    def _sync(self, must_low: int = 0, must_high: int = 0) -> None:
        sync = self.keeper.next_sync(float(self.step_id), must_low, must_high)
        self.keeper.synced(self.store.sync(W, sync, float(self.step_id)))  # a refusal fails the test

    def _step(self, plan: BatchPlan) -> None:
        self.step_id += 1
        book, keeper = self.book, self.keeper
        book.drop(plan)
        self.gone = [r for r in self.gone if r not in plan.finished_request_ids + plan.preempted_request_ids]
        delta = book.admit(plan)
        keeper.release(delta.release_request_ids)
        keeper.reclaim_cached(delta.leases)
        must = keeper.shortfall(delta.leases)
        if must != (0, 0):
            self._sync(*must)
        grants = keeper.take(delta.leases)
        self.granted_now = {b for grant in grants for b in grant.block_ids}
        demoting = {b for _, b in self.cache._demotions}  # noqa: SLF001 - copied out at grant, then garbage
        for block in self.granted_now - demoting:  # a block handed out holds whatever it held before: unknown
            self.kv[block] = [None] * BS
        book.grant(grants)
        self.granted_now = set()
        for spec in book.pending_restores():  # the checkpoint's KV copied in, past the hit's blocks
            state = book.state(spec.request_id)
            assert spec.first_block * BS == state.num_computed  # what the hit put in place
            for pos in range(spec.first_block * BS, spec.num_tokens):
                self.kv[state.block_table[pos // BS]][pos % BS] = state.token_ids[pos]
            book.restore(spec.request_id, True)
        for chunk in book.chunks():  # the forward pass writes the chunk's KV
            table = chunk.state.block_table
            for pos in range(chunk.start, chunk.end):
                self.kv.setdefault(table[pos // BS], [None] * BS)[pos % BS] = chunk.state.token_ids[pos]
        book.commit(lambda state: token_of(state.request_id, state.next_draw))
        cached, evicted, demoted = self.cache.take_report()
        for block_hash in cached:
            self.named[block_hash] = self._tokens_of_hash(block_hash)
            self.host_named.pop(block_hash, None)
        for block_hash in evicted:
            self.named.pop(block_hash, None)
            self.host_named.pop(block_hash, None)
        for block_hash in demoted:
            self.host_named[block_hash] = self.named.pop(block_hash)
        self.reports.append((cached, evicted, demoted))
        if keeper.wants_sync(float(self.step_id)):
            self._sync()

    def _tokens_of_hash(self, block_hash: int) -> tuple[int, ...]:
        for rid, state in self.book.states.items():
            chain = chain_from_tokens(state.token_ids[:state.num_prompt_tokens], BS, self.salts[rid])
            if block_hash in chain:
                k = chain.index(block_hash)
                return tuple(state.token_ids[k * BS:(k + 1) * BS])
        raise AssertionError("a block was cached by no running request")

    # ---- invariants ---------------------------------------------------------------------------
    @invariant()
    def requests_read_their_own_tokens(self) -> None:
        if not hasattr(self, "book"):
            return
        for state in self.book.states.values():
            for pos in range(state.num_computed):
                block = state.block_table[pos // BS]
                assert self.kv[block][pos % BS] == state.token_ids[pos], f"{state.request_id} reads another's KV"

    @invariant()
    def cached_blocks_hold_what_their_hash_names(self) -> None:
        if not hasattr(self, "book"):
            return
        index = self.cache.index
        for block_hash, tokens in self.named.items():
            assert index.refs(block_hash) >= 0
            entry = index._entries.get(block_hash)  # noqa: SLF001 - the test reads the index's table
            assert entry is not None, "a reported block is not cached"
            assert tuple(self.kv[entry.block_id]) == tokens, "a cached block was overwritten"
        assert set(self.named) == set(index._entries), "the reports do not add up to the cache"  # noqa: SLF001

    @invariant()
    def host_blocks_hold_what_their_hash_names(self) -> None:
        if not hasattr(self, "book"):
            return
        tier = self.cache.host_tier
        held = dict(tier._blocks) if tier is not None else {}  # noqa: SLF001 - the test reads the tier's table
        assert set(held) == set(self.host_named), "the reports do not add up to the host tier"
        for block_hash, payload in held.items():
            assert payload == self.host_named[block_hash], "a host block does not hold what its hash names"
        assert not self.cache._demotions and not self.cache._promotions, "a copy left for later"  # noqa: SLF001
        self.cache.check()
        # every report delivered: the mirror is exactly the two tiers
        if not self.reports:
            assert self.mirror == set(self.named) | set(self.host_named)

    @invariant()
    def accounting_is_exact(self) -> None:
        if not hasattr(self, "book"):
            return
        self.cache.index.check()
        self.keeper.check()
        tables = [b for s in self.book.states.values() for b in s.block_table]
        private = [b for b in tables if not self.cache.is_cached_block(b)]
        assert len(private) == len(set(private)), "a private block in two block tables"
        record = self.store.worker(W)
        leased = [b for lease in record.leases.values() for b in lease.block_ids]
        assert len(leased) == len(set(leased)) and not set(leased) & set(record.reserve)
        assert record.pool.num_free + len(record.reserve) + len(leased) == self.num_blocks
        if self.keeper.in_flight is None:
            view = {rid: (lease.service_class, tuple(lease.block_ids)) for rid, lease in record.leases.items()}
            assert view == self.keeper.store_view

    @invariant()
    def tenants_do_not_share(self) -> None:
        if not hasattr(self, "book"):
            return
        owners: dict[int, set[int]] = {}
        for rid, state in self.book.states.items():
            for block in state.block_table:
                if self.cache.is_cached_block(block):
                    owners.setdefault(block, set()).add(self.salts[rid])
        assert all(len(salts) == 1 for salts in owners.values()), "two tenants read one cached block"


WorkerWithCache.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
TestWorkerWithCache = WorkerWithCache.TestCase
