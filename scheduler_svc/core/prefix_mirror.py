"""The live scheduler's view of one worker's prefix cache (issue 13): a mirror, not a cache.

The worker owns the cache (llmserve/plan_book/prefix_cache.py) and reports, with every step
result, the hashes of the blocks it cached and evicted since the previous one; the mirror applies
them, so it holds exactly what the worker held when it sent its latest result. A hit claimed from
it can be stale by the plans in flight (the worker evicted a block meanwhile): the worker then
computes the missing blocks within the step, so a stale claim costs work, never correctness, and
the claim itself needs no reference here (the worker references the blocks when it admits the
request). A request's chain comes from its prompt and its tenant's salt (`Request.prefix_salt`).
"""

from __future__ import annotations

from collections.abc import Iterable

from llmserve.prefix import chain_from_tokens, max_cached_blocks
from scheduler_svc.core.request import Request


class PrefixMirror:
    """The hashes one worker's cache holds, as of its latest step result (`PrefixCacheView`)."""

    __slots__ = ("block_size", "_hashes", "num_claims", "num_claimed_tokens")

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._hashes: set[int] = set()
        self.num_claims = 0  # admissions with a hit, since start
        self.num_claimed_tokens = 0

    @property
    def num_cached(self) -> int:
        return len(self._hashes)

    def observe(self, cached: Iterable[int], evicted: Iterable[int]) -> None:
        """A step result's report (the two are disjoint)."""
        self._hashes.update(cached)
        self._hashes.difference_update(evicted)

    def chain(self, req: Request) -> tuple[int, ...]:
        """The request's chain, computed once (() without a salt)."""
        if not req.block_hashes and req.prefix_salt:
            req.block_hashes = chain_from_tokens(req.prompt_token_ids, self.block_size, req.prefix_salt)
        return req.block_hashes

    def cached_tokens(self, req: Request) -> int:
        chain = self.chain(req)
        if not chain:
            return 0
        limit = min(len(chain), max_cached_blocks(req.num_prompt_tokens, self.block_size))
        hashes = self._hashes
        n = 0
        while n < limit and chain[n] in hashes:
            n += 1
        return n * self.block_size

    def claim(self, req: Request) -> int:
        tokens = self.cached_tokens(req)
        self.num_claims += 1
        self.num_claimed_tokens += tokens
        return tokens
