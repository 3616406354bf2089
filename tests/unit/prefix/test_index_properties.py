"""Hypothesis properties of the prefix cache (issue 13): a referenced block is never evicted or
handed out twice; reference counts are exact after any sequence of match / acquire / insert /
release / allocate (evict); releasing every owner of a dead worker keeps them exact."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmserve.errors import CapacityError
from llmserve.prefix import CachingBlockPool, chain_from_trace_ids, max_cached_blocks, tenant_salt

BLOCK = 4
NUM_BLOCKS = 24
# Prompts over a few shared trace ids, so that chains overlap and compete for a small pool.
PROMPTS = st.lists(st.integers(0, 3), min_size=1, max_size=6)


class PrefixCacheMachine(RuleBasedStateMachine):
    """Requests (owner "wN/rK", N its worker) admitted with their cached prefix, computing blocks,
    finishing, and workers dying; a model of who holds what checks the pool after every rule."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = CachingBlockPool(NUM_BLOCKS)
        self.salt = tenant_salt("t")
        self.private: dict[str, list[int]] = {}  # request -> its uncached blocks
        self.shared: dict[str, list[int]] = {}  # request -> cached block ids it references
        self.chains: dict[str, tuple[int, ...]] = {}
        self.next_id = 0

    @rule(ids=PROMPTS, worker=st.integers(0, 2))
    def admit(self, ids: list[int], worker: int) -> None:
        num_tokens = len(ids) * BLOCK * 2 + 1
        chain = chain_from_trace_ids(ids, BLOCK * 2, BLOCK, num_tokens, self.salt)
        owner = f"w{worker}/r{self.next_id}"
        self.next_id += 1
        limit = max_cached_blocks(num_tokens, BLOCK)
        hit = self.pool.index.match(chain, limit)
        need = len(chain) + 1 - hit  # the rest of its blocks (plus the partial last one)
        if need > self.pool.num_available - 0:
            return  # would not fit: not admitted (the scheduler would wait)
        shared = self.pool.index.acquire(owner, chain, limit)
        assert len(shared) == hit
        try:
            fresh = self.pool.allocate(need)
        except CapacityError:  # acquiring pinned some reclaimable blocks: give them back
            self.pool.index.release(owner)
            return
        assert not set(fresh) & set(shared), "a referenced block was handed out"
        for blocks in (*self.private.values(), *self.shared.values()):
            assert not set(fresh) & set(blocks), "a held block was handed out twice"
        self.chains[owner], self.shared[owner], self.private[owner] = chain, shared, fresh

    @precondition(lambda self: bool(self.private))
    @rule(data=st.data())
    def compute(self, data: st.DataObject) -> None:
        """The request's prompt is computed: its fresh full blocks are named in the cache."""
        owner = data.draw(st.sampled_from(sorted(self.private)))
        chain, fresh = self.chains[owner], self.private[owner]
        start = len(self.shared[owner])
        kept = []
        for k, block_id in enumerate(fresh):
            pos = start + k
            if pos < len(chain) and self.pool.index.insert(owner, chain[pos], block_id):
                self.shared[owner].append(block_id)
            else:
                kept.append(block_id)
        self.private[owner] = kept
        self.chains[owner] = ()  # computed once

    @precondition(lambda self: bool(self.private))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.private)))
        self._drop([owner])

    @rule(worker=st.integers(0, 2))
    def worker_dies(self, worker: int) -> None:
        self._drop([o for o in self.private if o.startswith(f"w{worker}/")])

    @rule(n=st.integers(1, NUM_BLOCKS))
    def pool_needs_blocks(self, n: int) -> None:
        """Another end of the pool takes blocks (and gives them back): only unreferenced ones go."""
        referenced = {b for blocks in self.shared.values() for b in blocks}
        if n > self.pool.num_available:
            try:
                self.pool.allocate(n)
            except CapacityError:
                return
            raise AssertionError("allocated more than available")
        taken = self.pool.allocate(n)
        assert not set(taken) & referenced, "a referenced block was evicted"
        self.pool.free(taken)

    def _drop(self, owners: list[str]) -> None:
        self.pool.index.release_owners(owners)
        for owner in owners:
            self.pool.free(self.private.pop(owner))
            self.shared.pop(owner)
            self.chains.pop(owner)

    @invariant()
    def counts_are_exact(self) -> None:
        self.pool.check()
        index = self.pool.index
        refs: dict[int, int] = {}
        for blocks in self.shared.values():
            for b in blocks:
                refs[b] = refs.get(b, 0) + 1
        assert index.num_referenced == len(refs)
        held_private = sum(len(b) for b in self.private.values())
        assert self.pool.num_free + index.num_cached + held_private == NUM_BLOCKS


TestPrefixCache = PrefixCacheMachine.TestCase
TestPrefixCache.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_release_puts_the_tail_first_in_line_for_eviction() -> None:
    pool = CachingBlockPool(3)
    index = pool.index
    ids = pool.allocate(3)
    for k, block_id in enumerate(ids):
        assert index.insert("r", 100 + k, block_id)
    assert index.release("r") == 3
    assert pool.allocate(1) == [ids[2]]  # the chain's last block goes first
    assert index.match([100, 101, 102]) == 2


def test_a_duplicate_block_stays_private() -> None:
    pool = CachingBlockPool(2)
    a, b = pool.allocate(2)
    assert pool.index.insert("r1", 7, a)
    assert not pool.index.insert("r2", 7, b)  # computed twice at once: the second copy is not cached
    pool.free([b])
    assert pool.index.acquire("r3", [7]) == [a] and pool.index.refs(7) == 2
