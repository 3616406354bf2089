"""The worker's prefix cache (issue 13): which of the blocks it holds leased are full prompt
blocks named by their hash chain (llmserve.prefix), who references them, and what it tells the
scheduler. Pure; the plan book and the `LeaseKeeper` call it, and each keeps its own accounting.

    admit (plan book)   a new request with `num_cached_tokens` starts its block table with the
                        cached blocks of its chain (`acquire`: referenced by the request); if the
                        cache holds fewer than the plan claimed, the step recomputes the rest
    commit (plan book)  each full prompt block just computed is named (`insert`, referenced by
                        its request); a hash cached meanwhile by another request stays private
    release (keeper)    a request gone drops its references; the blocks it leased that are cached
                        move to the cache's own lease (`CACHE_HOLDER`) instead of the reserve
    reclaim (keeper)    a step short of blocks beyond what the store has free evicts
                        unreferenced cached blocks (LRU) into the reserve: a cached prefix
                        never delays anyone

Where the blocks are: every block is free (the store's), in the keeper's reserve, leased by one
request, or leased by `CACHE_HOLDER` (cached, and no longer in the lease of the request that
computed it). A referenced block is never evicted (the index's rule), so never handed out again
while a request reads it. The scheduler mirrors the index from `take_report` (the hashes cached
and evicted since the last step result, netted, so their order does not matter).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.plan import NewRequest
from llmserve.plan_book.state import RequestState
from llmserve.prefix import PrefixIndex, chain_from_tokens

# The lease that holds cached blocks no request leases any more ('#' is in no request id: the
# gateway's ids are letters, digits and . _ : -).
CACHE_HOLDER = "#prefix-cache"


@dataclass(slots=True)
class PrefixCacheStats:
    """Counters since start (the worker exports them)."""

    hit_blocks: int = 0  # blocks served to admissions
    missed_blocks: int = 0  # claimed by a plan but gone (evicted meanwhile): recomputed
    inserted_blocks: int = 0
    evicted_blocks: int = 0


class WorkerPrefixCache:
    """One worker's index of cached blocks and its report to the scheduler (module docstring)."""

    def __init__(self, block_size: int) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.index = PrefixIndex()
        self.stats = PrefixCacheStats()
        self._chains: dict[str, tuple[int, ...]] = {}  # request -> its prompt's chain
        self._named: dict[str, int] = {}  # request -> leading blocks of its chain hit or named
        self._cached: dict[int, None] = {}  # reported with the next result (disjoint from _evicted)
        self._evicted: dict[int, None] = {}

    # ---- the plan book -----------------------------------------------------------------------
    def chain(self, new: NewRequest) -> tuple[int, ...]:
        """The new request's prompt chain (() when it is not to be cached)."""
        if not new.prefix_salt:
            return ()
        return chain_from_tokens(new.token_ids[:new.num_prompt_tokens], self.block_size, new.prefix_salt)

    def available(self, chain: tuple[int, ...], num_cached_tokens: int) -> int:
        """Blocks of a claimed hit of `num_cached_tokens` that the cache holds now."""
        return self.index.match(chain, num_cached_tokens // self.block_size)

    def admit(self, request_id: str, chain: tuple[int, ...], num_hit_blocks: int, claimed_blocks: int) -> list[int]:
        """References the first `num_hit_blocks` blocks of `chain` for the request (from
        `available`, in the same step); returns their ids, its block table's start."""
        ids = self.index.acquire(request_id, chain, num_hit_blocks) if num_hit_blocks else []
        if chain:
            self._chains[request_id] = chain
            self._named[request_id] = len(ids)
        self.stats.hit_blocks += len(ids)
        self.stats.missed_blocks += claimed_blocks - len(ids)
        return ids

    def name_computed(self, state: RequestState) -> None:
        """Names the full prompt blocks of `state` computed so far (after a step's commit)."""
        rid = state.request_id
        chain = self._chains.get(rid)
        if not chain:
            return
        full = min(state.num_computed // self.block_size, len(chain))
        start = self._named[rid]
        if full <= start:
            return
        index, table = self.index, state.block_table
        for k in range(start, full):
            block_hash = chain[k]
            if index.insert(rid, block_hash, table[k]):
                self.stats.inserted_blocks += 1
                if block_hash in self._evicted:  # evicted and cached again since the last report
                    del self._evicted[block_hash]
                else:
                    self._cached[block_hash] = None
        self._named[rid] = full

    # ---- the lease keeper --------------------------------------------------------------------
    def release(self, request_id: str) -> None:
        """The request is gone: its references go (its blocks stay cached, unreferenced)."""
        self.index.release(request_id)
        self._chains.pop(request_id, None)
        self._named.pop(request_id, None)

    def is_cached_block(self, block_id: int) -> bool:
        return self.index.is_cached_block(block_id)

    @property
    def num_reclaimable(self) -> int:
        return self.index.num_reclaimable

    def evict(self, num_blocks: int) -> list[int]:
        """Forgets up to `num_blocks` unreferenced blocks (LRU); returns their ids."""
        out = []
        for block_hash, block_id in self.index.evict_entries(num_blocks):
            if block_hash in self._cached:  # cached since the last report: never reported, nothing to take back
                del self._cached[block_hash]
            else:
                self._evicted[block_hash] = None
            out.append(block_id)
        self.stats.evicted_blocks += len(out)
        return out

    def clear(self) -> list[int]:
        """Drops every reference and evicts everything (the Execute stream closed: the next
        scheduler starts from an empty mirror); returns the ids evicted."""
        self.index.release_owners(self.index.owners())
        self._chains.clear()
        self._named.clear()
        ids = self.evict(self.index.num_cached)
        self._cached.clear()
        self._evicted.clear()
        return ids

    # ---- the scheduler's mirror ----------------------------------------------------------------
    def take_report(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(hashes cached, hashes evicted) since the last call, for the next step result."""
        cached, evicted = tuple(self._cached), tuple(self._evicted)
        self._cached.clear()
        self._evicted.clear()
        return cached, evicted
