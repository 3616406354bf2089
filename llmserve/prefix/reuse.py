"""The infinite-cache bound of a trace: the blocks that an unbounded cache, never evicting, could
have served. A request's block counts as reusable when it (with its whole prefix, which its chain
hash names) appeared in an earlier request, within the blocks the cache may serve at all
(`max_cached_blocks`: the last prompt token is always computed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmserve.prefix.block_hash import BlockHash, max_cached_blocks


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
