"""The live scheduler's view of one worker's prefix cache (issue 13): a mirror, not a cache.

The worker owns the cache (llmserve/plan_book/prefix_cache.py) and reports, with every step
result, the hashes whose state changed since the previous one: cached on the device, demoted to
its host tier, or evicted from both; the mirror applies them, so it holds exactly what the worker
held when it sent its latest result. A hit may run on from device blocks into host-tier blocks
along the same chain (the worker copies those back into fresh blocks of the request, a copy, not
a prefill); both count as cached tokens here. A hit claimed from
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

    __slots__ = ("block_size", "_hashes", "_host", "num_claims", "num_claimed_tokens")

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._hashes: set[int] = set()  # in either tier
        self._host: set[int] = set()  # of those, in the host tier
        self.num_claims = 0  # admissions with a hit, since start
        self.num_claimed_tokens = 0

    @property
    def num_cached(self) -> int:
        return len(self._hashes)

    @property
    def num_host(self) -> int:
        return len(self._host)

    def observe(self, cached: Iterable[int], evicted: Iterable[int], demoted: Iterable[int] = ()) -> None:
        """A step result's report (the three are disjoint: each hash's state now)."""
        hashes, host = self._hashes, self._host
        for h in cached:
            hashes.add(h)
            host.discard(h)
        for h in evicted:
            hashes.discard(h)
            host.discard(h)
        for h in demoted:
            hashes.add(h)
            host.add(h)

    def host_blocks(self, req: Request, cached_tokens: int) -> int:
        """Of the first `cached_tokens` of `req`'s prompt, the blocks in the host tier."""
        host = self._host
        if not host:
            return 0
        return sum(1 for h in self.chain(req)[:cached_tokens // self.block_size] if h in host)

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
