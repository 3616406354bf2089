"""A two-ended pool of KV block ids (BROS bidirectional KV management, pool-level reading).

Real-time requests take the lowest free ids, best-effort and deadline requests the highest, so the
two classes grow toward each other from opposite ends and meet only when the pool is full. The
scheduler can then preempt the best-effort blocks nearest the boundary.

The pool only counts and hands out ids; it knows nothing of requests (see `LeaseTable`). The
simulator uses it directly, so the API is deliberately small:

    pool = BlockPool(8)
    pool.allocate(2, PoolEnd.LOW)    # [0, 1]
    pool.allocate(3, PoolEnd.HIGH)   # [7, 6, 5]
    pool.free([0, 6])
    pool.num_free, pool.num_used(PoolEnd.HIGH)   # 5, 2

Cost: O(log n) amortized per block. Each end keeps a heap of candidate ids with lazy deletion: an
id taken from one end stays in the other end's heap and is skipped when popped. An id is in a heap
at most once (a presence flag per heap), so the heaps never grow beyond `num_blocks` entries.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from kvstore_svc.core.classes import PoolEnd
from kvstore_svc.core.errors import InvalidSpecError, OutOfBlocksError


class BlockPool:
    """Block ids `0 .. num_blocks-1`, each free or used by one end."""

    __slots__ = ("_num_blocks", "_end_of", "_low_heap", "_high_heap", "_in_low", "_in_high", "_num_used")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise InvalidSpecError(f"num_blocks must be positive, got {num_blocks}")
        self._num_blocks = num_blocks
        # The end that holds each block, None while free.
        self._end_of: list[PoolEnd | None] = [None] * num_blocks
        # Min-heap of ids for the low end; min-heap of negated ids for the high end.
        self._low_heap: list[int] = list(range(num_blocks))
        self._high_heap: list[int] = [-block for block in range(num_blocks - 1, -1, -1)]
        self._in_low = bytearray(b"\x01") * num_blocks
        self._in_high = bytearray(b"\x01") * num_blocks
        self._num_used: dict[PoolEnd, int] = {PoolEnd.LOW: 0, PoolEnd.HIGH: 0}

    @property
    def num_blocks(self) -> int:
        """Blocks in the pool."""
        return self._num_blocks

    @property
    def num_free(self) -> int:
        """Blocks held by neither end."""
        return self._num_blocks - self._num_used[PoolEnd.LOW] - self._num_used[PoolEnd.HIGH]

    def num_used(self, end: PoolEnd) -> int:
        """Blocks currently held by allocations from `end`."""
        return self._num_used[end]

    def end_of(self, block_id: int) -> PoolEnd | None:
        """The end holding `block_id`, or None when it is free."""
        return self._end_of[block_id]

    def allocate(self, num: int, end: PoolEnd) -> list[int]:
        """Takes `num` free blocks from `end`, all or none.

        Returns the ids in the order the caller should use them: ascending from the low end,
        descending from the high end. Raises `OutOfBlocksError` (nothing taken) when fewer than
        `num` are free, `InvalidSpecError` when `num` is negative.
        """
        if num < 0:
            raise InvalidSpecError(f"cannot allocate a negative number of blocks ({num})")
        if num > self.num_free:
            raise OutOfBlocksError(
                f"{num} blocks asked, {self.num_free} free of {self._num_blocks}", requested=num, free=self.num_free
            )
        low = end is PoolEnd.LOW
        heap = self._low_heap if low else self._high_heap
        present = self._in_low if low else self._in_high
        taken: list[int] = []
        while len(taken) < num:
            key = heapq.heappop(heap)
            block = key if low else -key
            present[block] = 0
            if self._end_of[block] is None:  # else a stale entry: the other end took it
                self._end_of[block] = end
                taken.append(block)
        self._num_used[end] += num
        return taken

    def take(self, block_ids: Iterable[int], end: PoolEnd) -> None:
        """Marks the given free blocks used by `end`, all or none (a pool rebuilt from a worker's
        declaration). Raises `InvalidSpecError` (nothing taken) for an id out of range, a used id,
        or a repeat."""
        blocks = list(block_ids)
        seen: set[int] = set()
        for block in blocks:
            if not 0 <= block < self._num_blocks:
                raise InvalidSpecError(f"block {block} is outside the pool of {self._num_blocks} blocks")
            if self._end_of[block] is not None or block in seen:
                raise InvalidSpecError(f"block {block} is declared twice")
            seen.add(block)
        # The ids stay in both heaps (lazy deletion): a pop skips them while they are used.
        for block in blocks:
            self._end_of[block] = end
        self._num_used[end] += len(blocks)

    def free(self, block_ids: Iterable[int]) -> None:
        """Returns blocks to the pool, all or none.

        Raises `InvalidSpecError` (nothing freed) for an id out of range, a free id, or a repeat.
        """
        blocks = list(block_ids)
        seen: set[int] = set()
        for block in blocks:
            if not 0 <= block < self._num_blocks:
                raise InvalidSpecError(f"block {block} is outside the pool of {self._num_blocks} blocks")
            if self._end_of[block] is None or block in seen:
                raise InvalidSpecError(f"block {block} is not allocated (double free)")
            seen.add(block)
        for block in blocks:
            end = self._end_of[block]
            assert end is not None
            self._num_used[end] -= 1
            self._end_of[block] = None
            if not self._in_low[block]:
                heapq.heappush(self._low_heap, block)
                self._in_low[block] = 1
            if not self._in_high[block]:
                heapq.heappush(self._high_heap, -block)
                self._in_high[block] = 1
