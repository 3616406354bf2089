"""The lease keeper of a worker with a prefix cache (issue 13; prefix_cache.py, leases.py).

A cached block outlives the request that computed it: when that request is released, its cached
blocks move to the cache's own lease (`CACHE_HOLDER`, best-effort, so the store records them as
leased, never free) instead of the reserve, and stay there until evicted. A step short of blocks
asks the store for what it has free, as a worker without a cache does, and evicts unreferenced
cached blocks (LRU) into its reserve for the rest (`reclaim_cached`): the cache grows into the
pool's free space and gives way when the pool is full, locally, so a cached prefix never delays
an admission and never needs an RPC to go.
To the scheduler's block ledger an unreferenced cached block is free, and it is: the worker takes
it back on demand. Every block stays in exactly one place: free, reserved, leased by one request,
or leased by the cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmserve.plan import LeaseSpec
from llmserve.plan_book.leases import LeaseKeeper
from llmserve.plan_book.prefix_cache import CACHE_HOLDER, WorkerPrefixCache
from llmserve.plan_book.store_record import Held
from llmserve.types import ServiceClass


@dataclass(slots=True)
class CachingLeaseKeeper(LeaseKeeper):
    """A `LeaseKeeper` whose requests' cached blocks outlive them (module docstring)."""

    prefix: WorkerPrefixCache = field(kw_only=True)

    @property
    def num_cached(self) -> int:
        """Blocks in the cache's own lease (cached, no request leases them)."""
        lease = self._held.get(CACHE_HOLDER)
        return len(lease.blocks) if lease is not None else 0

    def release(self, request_ids: Iterable[str]) -> int:
        """Drops the requests' references; their cached blocks join the cache's lease, the rest
        go back to the reserve; returns how many went back."""
        prefix, held = self.prefix, self._held
        ids = list(request_ids)
        for rid in ids:
            prefix.release(rid)
            lease = held.get(rid)
            if lease is None or rid == CACHE_HOLDER:
                continue
            cached = [b for b in lease.blocks if prefix.is_cached_block(b)]
            if cached:
                lease.blocks = [b for b in lease.blocks if not prefix.is_cached_block(b)]
                self._cache_lease().blocks.extend(cached)
                self._dirty[CACHE_HOLDER] = None
        return LeaseKeeper.release(self, [rid for rid in ids if rid != CACHE_HOLDER])

    def reclaim_cached(self, leases: Sequence[LeaseSpec]) -> int:
        """Evicts unreferenced cached blocks (LRU) into the reserve for what `leases` lack beyond
        the store's free blocks (the store is asked for the rest, as without a cache), the
        real-time part's share first; returns how many."""
        short_low, short_high = self._reserve.shortfall(leases)
        excess = short_low + short_high - self.num_free_at_store
        if excess <= 0:
            return 0
        return self._uncache(self.prefix.evict(excess), min(short_low, excess))

    def drop_cache(self) -> int:
        """Evicts the whole cache into the reserve (the Execute stream closed: the next scheduler
        starts with an empty mirror); returns how many blocks."""
        return self._uncache(self.prefix.clear(), 0)

    def _uncache(self, evicted: list[int], to_low: int) -> int:
        if not evicted:
            return 0
        lease = self._held[CACHE_HOLDER]
        gone = set(evicted)
        lease.blocks = [b for b in lease.blocks if b not in gone]
        assert len(gone) == len(evicted), "an evicted block twice"
        if not lease.blocks:
            del self._held[CACHE_HOLDER]
        self._dirty[CACHE_HOLDER] = None
        self._reserve.put_back(ServiceClass.REAL_TIME, evicted[:to_low])
        self._reserve.put_back(ServiceClass.BEST_EFFORT, evicted[to_low:])
        self._num_held -= len(evicted)
        return len(evicted)

    def _cache_lease(self) -> Held:
        lease = self._held.get(CACHE_HOLDER)
        if lease is None:
            lease = self._held[CACHE_HOLDER] = Held(ServiceClass.BEST_EFFORT, [])
        return lease

    def _requests_hold(self) -> bool:
        return len(self._held) > (CACHE_HOLDER in self._held)

    def check(self) -> None:
        """The keeper's invariants, and: the cache's lease holds only cached, unreferenced-or-
        referenced blocks of the index, and every unreferenced cached block is in it."""
        LeaseKeeper.check(self)
        index = self.prefix.index
        lease = self._held.get(CACHE_HOLDER)
        in_lease = set(lease.blocks) if lease is not None else set()
        assert all(index.is_cached_block(b) for b in in_lease), "the cache's lease holds an uncached block"
        assert index.num_reclaimable <= len(in_lease), "an unreferenced cached block is leased by a request"
