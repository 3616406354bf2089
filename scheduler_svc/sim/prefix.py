"""The simulated worker's prefix cache (issue 13): the shared `llmserve.prefix` index, filled as
the simulated worker computes prompt blocks, and the scheduler core's `PrefixCacheView` onto it.
The core sees the very index the worker fills, as the service's scheduler is to mirror the
store's exactly.

    core admits a request  ──claim──▶  its cached prefix is referenced (pending until the worker
                                       admits it; released if that step fails)
    worker computes blocks ──insert──▶ each full prompt block is named, referenced by the request
    worker drops the request ──release──▶ its blocks stay cached, unreferenced, LRU
    after every step: unreferenced blocks are evicted (LRU) down to the pool's free blocks

Where the cache lives: in the pool's free space. A cached block a request references is one of
that request's blocks (the plan book leases every block of a request, its cached prefix
included, so sharing between concurrent requests saves compute here, not memory: phase B's
store maps the prefix onto the shared blocks). A cached block no one references sits in a free
block, owned by neither end of the two-ended pool, and goes the moment either end needs the
block (`fit`): so a cached prefix never delays an RT admission (llmserve/prefix/pool.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llmserve.plan import BatchPlan
from llmserve.plan_book import RequestState
from llmserve.prefix import PrefixIndex, max_cached_blocks
from llmserve.prefix import chain_from_trace_ids, tenant_salt
from scheduler_svc.core.request import Request
from scheduler_svc.sim.workload import WorkloadRequest

Owner = tuple[str, int]  # (request id, admission serial): one owner per admission of a request


@dataclass
class PrefixStats:
    # First admissions of requests with a chain, the blocks the cache served them, and the blocks
    # it could have (max_cached_blocks): the hit rate, comparable with the trace's reuse bound.
    lookups: int = 0
    hit_blocks: int = 0
    cacheable_blocks: int = 0
    readmission_hit_blocks: int = 0  # served again to requests re-admitted after a preemption
    inserted_blocks: int = 0
    evicted_blocks: int = 0


def workload_chain(req: WorkloadRequest, block_size: int) -> tuple[int, ...]:
    """The request's chain from its trace ids, salted by tenant and the ids' scope."""
    if not req.hash_ids:
        return ()
    salt = tenant_salt(f"{req.tenant}\x00{req.hash_scope}")
    return chain_from_trace_ids(req.hash_ids, req.hash_block_tokens, block_size, req.prompt_tokens, salt)


class SimPrefixCache:
    """One worker's cache: the index, its requests' claims (module docstring)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.index = PrefixIndex()
        self.stats = PrefixStats()
        self._serial = itertools.count()
        self._block_ids = itertools.count()  # the simulation places no block: ids only name them
        self._pending: dict[str, Owner] = {}  # claimed by the core, not yet admitted by the worker
        self._active: dict[str, tuple[Owner, RequestState, tuple[int, ...]]] = {}
        self._named: dict[Owner, int] = {}  # owner -> leading blocks of its chain named or hit
        self._admitted: set[str] = set()

    # ---- the core's view (scheduler_svc/core/prefix_view.py) ----------------------------------
    def cached_tokens(self, req: Request) -> int:
        if not req.block_hashes:
            return 0
        return self.index.match(req.block_hashes, self._limit(req)) * self.block_size

    def claim(self, req: Request) -> int:
        owner = (req.request_id, next(self._serial))
        hit = len(self.index.acquire(owner, req.block_hashes, self._limit(req)))
        stale = self._pending.pop(req.request_id, None)
        if stale is not None:  # claimed by a plan whose step never admitted it
            self._drop_owner(stale)
        self._pending[req.request_id] = owner
        self._named[owner] = hit
        return hit * self.block_size

    def _limit(self, req: Request) -> int:
        return max_cached_blocks(req.num_prompt_tokens, self.block_size)

    # ---- the worker's side ---------------------------------------------------------------------
    def after_step(self, plan: BatchPlan, states: Mapping[str, RequestState], chains: Mapping[str, tuple[int, ...]],
                   free_blocks: int) -> None:
        """After the worker applied `plan` (or failed it): releases the requests it no longer
        holds, activates the ones it admitted, names the prompt blocks computed, and fits the
        unreferenced blocks into `free_blocks`."""
        for rid, (owner, state, _) in list(self._active.items()):
            if states.get(rid) is not state:  # finished, preempted, or dropped by a failed step
                del self._active[rid]
                self._drop_owner(owner)
        for new in plan.new_requests:
            rid = new.request_id
            owner = self._pending.pop(rid, None) if new.num_cached_tokens else None
            state = states.get(rid)
            if state is None or rid in self._active:  # the step failed: it never ran here
                if owner is not None:
                    self._drop_owner(owner)
                continue
            chain = chains.get(rid, ())
            if owner is None:
                owner = (rid, next(self._serial))
                self._named[owner] = 0
            self._active[rid] = (owner, state, chain)
            if chain and rid in self._admitted:
                self.stats.readmission_hit_blocks += new.num_cached_tokens // self.block_size
            elif chain:
                self._admitted.add(rid)
                self.stats.lookups += 1
                self.stats.hit_blocks += new.num_cached_tokens // self.block_size
                self.stats.cacheable_blocks += min(len(chain), max_cached_blocks(new.num_prompt_tokens,
                                                                                 self.block_size))
        for rid, num_tokens, computed, _ in plan.scheduled:
            active = self._active.get(rid)
            if active is not None and active[2]:
                self._name(active[0], active[2], (computed + num_tokens) // self.block_size)
        excess = self.index.num_reclaimable - max(0, free_blocks)
        if excess > 0:
            self.stats.evicted_blocks += len(self.index.evict(excess))

    def _name(self, owner: Owner, chain: tuple[int, ...], full_blocks: int) -> None:
        start, end = self._named[owner], min(full_blocks, len(chain))
        for k in range(start, end):
            if self.index.insert(owner, chain[k], next(self._block_ids)):
                self.stats.inserted_blocks += 1
        self._named[owner] = max(start, end)

    def _drop_owner(self, owner: Owner) -> None:
        self.index.release(owner)
        self._named.pop(owner, None)

    def counters(self) -> dict[str, float]:
        return prefix_counters([self])  # type: ignore[return-value]

    def check(self) -> None:
        self.index.check()
        owners = {o for o, _, _ in self._active.values()} | set(self._pending.values())
        assert set(self.index.owners()) <= owners, "a request the worker dropped still references blocks"


def prefix_counters(caches: Iterable[SimPrefixCache | None]) -> dict[str, float] | None:
    """The run's prefix-cache counters (RunStats.prefix), summed over the workers' caches."""
    present = [c for c in caches if c is not None]
    if not present:
        return None
    s = PrefixStats()
    for cache in present:
        for name in ("lookups", "hit_blocks", "cacheable_blocks", "readmission_hit_blocks", "inserted_blocks",
                     "evicted_blocks"):
            setattr(s, name, getattr(s, name) + getattr(cache.stats, name))
    block_size = present[0].block_size
    return {"prefix_hit_blocks": s.hit_blocks, "prefix_cacheable_blocks": s.cacheable_blocks,
                "prefix_hit_rate": s.hit_blocks / s.cacheable_blocks if s.cacheable_blocks else 0.0,
                "prefill_tokens_saved": (s.hit_blocks + s.readmission_hit_blocks) * block_size,
                "prefix_inserted_blocks": s.inserted_blocks, "prefix_evicted_blocks": s.evicted_blocks}
