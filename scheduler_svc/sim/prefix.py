"""The simulated worker's prefix cache (issue 13) is the live worker's: the plan book's
`WorkerPrefixCache` with its host tier (llmserve/plan_book/prefix_cache.py,
llmserve/prefix/host_tier.py) and the `CachingLeaseKeeper`, run by the simulated worker exactly as
the live worker runs them; the scheduler core sees it through the live scheduler's mirror
(scheduler_svc/core/prefix_mirror.py), fed by the reports the simulated worker's step results
carry. All the simulator adds is here: the chains of a workload's requests from the traces' hash
ids (the live worker hashes the prompt's tokens; a simulated prompt has no real tokens), and the
counters the benchmarks read (the hits of first admissions, comparable with the trace's reuse bound).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llmserve.plan import NewRequest
from llmserve.plan_book import WorkerPrefixCache
from llmserve.prefix import chain_from_trace_ids, max_cached_blocks, tenant_salt
from scheduler_svc.sim.workload import WorkloadRequest


def workload_chain(req: WorkloadRequest, block_size: int) -> tuple[int, ...]:
    """The request's chain from its trace ids, salted by tenant and the ids' scope."""
    if not req.hash_ids:
        return ()
    salt = tenant_salt(f"{req.tenant}\x00{req.hash_scope}")
    return chain_from_trace_ids(req.hash_ids, req.hash_block_tokens, block_size, req.prompt_tokens, salt)


@dataclass
class PrefixStats:
    """What one simulated worker's cache served. First admissions of requests with a chain: the
    blocks served (device and host tier) and those it could have (`max_cached_blocks`): the hit
    rate, comparable with the trace's reuse bound. Re-admissions after a preemption apart."""

    block_size: int
    lookups: int = 0
    hit_blocks: int = 0
    host_hit_blocks: int = 0
    cacheable_blocks: int = 0
    readmission_hit_blocks: int = 0
    _admitted: set[str] = field(default_factory=set, repr=False)

    def on_admit(self, new: NewRequest, chain: tuple[int, ...], num_device: int, num_host: int) -> None:
        """`WorkerPrefixCache.on_admit`: a new request admitted with its hit."""
        if not chain:
            return
        rid = new.request_id
        if rid in self._admitted:
            self.readmission_hit_blocks += num_device + num_host
            return
        self._admitted.add(rid)
        self.lookups += 1
        self.hit_blocks += num_device + num_host
        self.host_hit_blocks += num_host
        self.cacheable_blocks += min(len(chain), max_cached_blocks(new.num_prompt_tokens, self.block_size))


def prefix_counters(caches: Iterable[tuple[PrefixStats, WorkerPrefixCache] | None]) -> dict[str, float] | None:
    """The run's prefix-cache counters (RunStats.prefix), summed over the workers' caches."""
    present = [c for c in caches if c is not None]
    if not present:
        return None
    out = {"prefix_hit_blocks": 0, "prefix_cacheable_blocks": 0, "prefill_tokens_saved": 0,
           "prefix_inserted_blocks": 0, "prefix_evicted_blocks": 0, "prefix_host_hit_blocks": 0,
           "prefix_demoted_blocks": 0, "prefix_host_dropped_blocks": 0, "prefix_missed_blocks": 0}
    for stats, cache in present:
        out["prefix_hit_blocks"] += stats.hit_blocks
        out["prefix_cacheable_blocks"] += stats.cacheable_blocks
        out["prefill_tokens_saved"] += (stats.hit_blocks + stats.readmission_hit_blocks) * stats.block_size
        out["prefix_host_hit_blocks"] += stats.host_hit_blocks
        worker = cache.stats
        out["prefix_inserted_blocks"] += worker.inserted_blocks
        out["prefix_evicted_blocks"] += worker.evicted_blocks
        out["prefix_demoted_blocks"] += worker.demoted_blocks
        out["prefix_host_dropped_blocks"] += worker.host_dropped_blocks
        out["prefix_missed_blocks"] += worker.missed_blocks
    cacheable = out["prefix_cacheable_blocks"]
    out["prefix_hit_rate"] = out["prefix_hit_blocks"] / cacheable if cacheable else 0.0
    return out
