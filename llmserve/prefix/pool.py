"""A block pool whose free space includes the cached, unreferenced blocks.

How cached blocks count in BROS's two-ended pool (RT allocates from one end, BE from the other):
a cached block that a running request references belongs to that request's end, as any block it
holds. A cached block that no one references is owned by neither end: it is free space that
either end reclaims when it has no free block left, RT first when both want blocks in the same
step. So `num_available` (free plus reclaimable) is what an admission is checked against, and a
cached prefix never delays an RT admission: keeping it costs RT nothing, since RT evicts it on
demand. The KV store's two-ended pool is to wrap this rule; this pool is the one-ended model the
simulator and the property tests use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from llmserve.errors import CapacityError
from llmserve.prefix.index import PrefixIndex


class CachingBlockPool:
    """`num_blocks` block ids: free, held privately by a request, or cached (in `index`)."""

    __slots__ = ("num_blocks", "index", "_free", "_is_free")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.index = PrefixIndex()
        self._free: deque[int] = deque(range(num_blocks))
        self._is_free = [True] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_available(self) -> int:
        """Blocks an allocation may take: free ones, then cached ones no one references."""
        return len(self._free) + self.index.num_reclaimable

    def allocate(self, num_blocks: int) -> list[int]:
        """`num_blocks` ids, free ones first, then evicted cached ones (LRU). Raises CapacityError
        (taking nothing) when fewer are available."""
        if num_blocks > self.num_available:
            raise CapacityError(f"{num_blocks} blocks wanted, {self.num_available} available")
        out = []
        while self._free and len(out) < num_blocks:
            out.append(self._free.popleft())
        out += self.index.evict(num_blocks - len(out))
        for block_id in out:
            self._is_free[block_id] = False
        return out

    def free(self, block_ids: Iterable[int]) -> None:
        """Returns blocks a request held privately (never cached ones: `index.release` them)."""
        for block_id in block_ids:
            if self._is_free[block_id] or self.index.is_cached_block(block_id):
                raise ValueError(f"block {block_id} is free or cached: not the caller's to free")
            self._is_free[block_id] = True
            self._free.append(block_id)

    def check(self) -> None:
        """Raises AssertionError unless free and cached blocks are disjoint and counts are exact."""
        self.index.check()
        assert len(set(self._free)) == len(self._free)
        assert all(self._is_free[b] for b in self._free) and sum(self._is_free) == len(self._free)
        assert not any(self.index.is_cached_block(b) for b in self._free), "a cached block is also free"
