"""What a trace lets a prefix cache serve, as references for the hits a run achieves.

`reuse_bound`: the infinite-cache bound, the blocks that an unbounded cache, never evicting,
could have served. A request's block counts as reusable when it (with its whole prefix, which its
chain hash names) appeared in an earlier request, within the blocks the cache may serve at all
(`max_cached_blocks`: the last prompt token is always computed).

`lru_reference`: what the same index (index.py) serves with `capacity_blocks` of cache, every
block unreferenced between requests (requests one at a time, in arrival order). Not a bound
(LRU is not the optimal policy, and a served system holds running requests' blocks too), but it
separates the misses the cache's size causes from those the serving causes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmserve.prefix.block_hash import BlockHash, max_cached_blocks
from llmserve.prefix.index import PrefixIndex


@dataclass(frozen=True, slots=True)
class ReuseBound:
    num_blocks: int  # full prompt blocks the cache may serve, summed over the requests
    num_reusable: int  # of those, blocks an earlier request had (the bound on hits)
    block_size: int

    @property
    def fraction(self) -> float:
        return self.num_reusable / self.num_blocks if self.num_blocks else 0.0


def reuse_bound(prompts: Iterable[tuple[int, Sequence[BlockHash]]], block_size: int) -> ReuseBound:
    """`prompts`: (prompt tokens, chain) in arrival order."""
    seen: set[BlockHash] = set()
    total = reusable = 0
    for num_tokens, chain in prompts:
        limit = min(len(chain), max_cached_blocks(num_tokens, block_size))
        total += limit
        n = 0
        while n < limit and chain[n] in seen:
            n += 1
        reusable += n
        seen.update(chain)
    return ReuseBound(total, reusable, block_size)


def lru_reference(prompts: Iterable[tuple[int, Sequence[BlockHash]]], block_size: int,
                  capacity_blocks: int) -> ReuseBound:
    """`prompts`: (prompt tokens, chain) in arrival order; see the module docstring."""
    index = PrefixIndex()
    total = reusable = 0
    next_id = 0
    for k, (num_tokens, chain) in enumerate(prompts):
        limit = min(len(chain), max_cached_blocks(num_tokens, block_size))
        total += limit
        hit = len(index.acquire(k, chain, limit))
        reusable += hit
        for block_hash in chain[hit:]:
            index.insert(k, block_hash, next_id)
            next_id += 1
        index.release(k)
        index.evict(index.num_cached - capacity_blocks)
    return ReuseBound(total, reusable, block_size)
