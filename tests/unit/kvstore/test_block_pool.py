"""BlockPool: two-ended allocation, atomic refusal, frees, counts."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kvstore_svc.core import BlockPool, InvalidSpecError, OutOfBlocksError, PoolEnd


def test_ends_grow_toward_each_other() -> None:
    pool = BlockPool(10)
    assert pool.allocate(3, PoolEnd.LOW) == [0, 1, 2]
    assert pool.allocate(2, PoolEnd.HIGH) == [9, 8]
    assert pool.allocate(1, PoolEnd.LOW) == [3]
    assert pool.allocate(4, PoolEnd.HIGH) == [7, 6, 5, 4]
    assert pool.num_free == 0
    assert (pool.num_used(PoolEnd.LOW), pool.num_used(PoolEnd.HIGH)) == (4, 6)


def test_freed_blocks_are_reused_from_the_right_end() -> None:
    pool = BlockPool(8)
    low = pool.allocate(4, PoolEnd.LOW)  # 0..3
    pool.allocate(2, PoolEnd.HIGH)  # 7, 6
    pool.free([low[1], 7])
    # Lowest free is 1 for real-time; highest free is 7 for best-effort.
    assert pool.allocate(1, PoolEnd.LOW) == [1]
    assert pool.allocate(1, PoolEnd.HIGH) == [7]
    # The high end reaches blocks the low end once held and freed (stale heap entries skipped).
    pool.free([0, 2])
    assert pool.allocate(4, PoolEnd.HIGH) == [5, 4, 2, 0]
    assert pool.num_free == 0


def test_short_allocation_takes_nothing() -> None:
    pool = BlockPool(4)
    pool.allocate(3, PoolEnd.HIGH)
    with pytest.raises(OutOfBlocksError) as info:
        pool.allocate(2, PoolEnd.LOW)
    assert (info.value.requested, info.value.free) == (2, 1)
    assert pool.num_free == 1 and pool.num_used(PoolEnd.LOW) == 0
    assert pool.allocate(1, PoolEnd.LOW) == [0]


def test_bad_frees_free_nothing() -> None:
    pool = BlockPool(4)
    blocks = pool.allocate(2, PoolEnd.LOW)
    for bad in ([blocks[0], 3], [blocks[0], blocks[0]], [4], [-1]):
        with pytest.raises(InvalidSpecError):
            pool.free(bad)
        assert pool.num_used(PoolEnd.LOW) == 2
    pool.free(blocks)
    assert pool.num_free == 4


def test_zero_and_invalid_sizes() -> None:
    pool = BlockPool(2)
    assert pool.allocate(0, PoolEnd.LOW) == []
    with pytest.raises(InvalidSpecError):
        pool.allocate(-1, PoolEnd.LOW)
    with pytest.raises(InvalidSpecError):
        BlockPool(0)


def test_heaps_stay_bounded_under_churn() -> None:
    # Repeated alloc/free at one end must not grow the other end's heap (no duplicate entries).
    pool = BlockPool(16)
    for _ in range(1000):
        pool.free(pool.allocate(3, PoolEnd.LOW))
        pool.free(pool.allocate(2, PoolEnd.HIGH))
    assert len(pool._low_heap) <= 16 and len(pool._high_heap) <= 16
    assert pool.allocate(16, PoolEnd.LOW) == list(range(16))


class BlockPoolMachine(RuleBasedStateMachine):
    """Any interleaving of allocations at both ends and partial frees: each allocation takes exactly
    the lowest (low end) or highest (high end) free ids, a short one takes nothing."""

    @initialize(num_blocks=st.integers(1, 10))
    def create(self, num_blocks: int) -> None:
        self.pool = BlockPool(num_blocks)
        self.owner: dict[int, PoolEnd] = {}

    def free_ids(self) -> list[int]:
        return [b for b in range(self.pool.num_blocks) if b not in self.owner]

    @rule(end=st.sampled_from(list(PoolEnd)), num=st.integers(0, 10))
    def allocate(self, end: PoolEnd, num: int) -> None:
        free = self.free_ids()
        if num > len(free):
            with pytest.raises(OutOfBlocksError):
                self.pool.allocate(num, end)
            return
        want = free[:num] if end is PoolEnd.LOW else free[::-1][:num]
        assert self.pool.allocate(num, end) == want
        self.owner.update((b, end) for b in want)

    @rule(data=st.data())
    def free_some(self, data: st.DataObject) -> None:
        if not self.owner:
            return
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.owner)), min_size=1, unique=True))
        self.pool.free(chosen)
        for block in chosen:
            del self.owner[block]

    @invariant()
    def counts_match(self) -> None:
        if not hasattr(self, "pool"):
            return
        for end in PoolEnd:
            assert self.pool.num_used(end) == sum(1 for e in self.owner.values() if e is end)
        assert self.pool.num_free == len(self.free_ids())
        assert all(self.pool.end_of(b) is e for b, e in self.owner.items())


BlockPoolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestBlockPoolMachine = BlockPoolMachine.TestCase
