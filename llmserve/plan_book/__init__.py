"""How a worker applies a plan: THE implementation, shared by the real worker's step runner
(worker_svc/core/runner.py, which adds only the torch work), the simulated worker (which adds a
cost model and a host-tier model) and the tests' fake worker. Pure and synchronous.

One step, in the order docs/design.md gives:

    dropped = book.drop(plan)      # finished and preempted requests go (their leases wait for
                                   # the next Apply); the caller checkpoints the dropped states
    delta = book.admit(plan)       # validate (PlanError: nothing of the plan's work happens),
                                   # admit new requests; the KvDelta: releases, then block leases
    <one atomic KV Apply(delta)>   # the caller's business
    book.grant(grants)             # extend block tables (PlanError if they do not answer)
    book.restore(request_id, ok)   # per delta.restores: was the checkpoint copied in?
    work = book.work()             # token accounting (a failed restore's chunk starts at 0);
                                   # book.chunks(): what to compute, for a caller with a model
    <forward pass, sampling>       # the caller's business
    sampled = book.commit(tokens)  # advance counts, append the sampled tokens; step closed

A failed Apply or forward pass calls `abort(kv_applied)` instead: the step's requests are dropped
(the planner recomputes them) and their leases released with the next Apply. `reset()` drops
everything (the stream closed).

Block accounting per scheduled request: it needs `cdiv(num_computed + num_tokens, block_size)`
blocks; the lease asks for the ones its table lacks.

    tokens   |0 1 2 3|4 5 6 7|8 9 . .|       block_size 4, 6 computed, 4 scheduled -> 10 tokens
    table    [ b17   , b3    ]              -> cdiv(10, 4) = 3 blocks needed, 2 held: lease 1

The KV Apply is, for a worker that leases ahead, the `LeaseKeeper`'s (`leases.py`): releases
and leases served from the blocks it holds ahead, with a store RPC only when those run short.

Files: `book.py` (PlanBook), `checks.py` (PlanError and the checks), `state.py` (RequestState,
StepWork, Chunk), `leases.py` (LeaseKeeper: leases held ahead, synced with the store in batches;
its parts `reserve.py` and `store_record.py`), the prefix cache (issue 13): `prefix_cache.py`
(WorkerPrefixCache: the worker's index of cached prompt blocks and its report to the scheduler),
`hits.py` (a new request's hit as `admit` takes it), `caching_keeper.py` (CachingLeaseKeeper:
cached blocks outlive their request in the cache's own lease, reclaimed when the store has no free block).
"""

from llmserve.plan_book.book import PlanBook
from llmserve.plan_book.caching_keeper import CachingLeaseKeeper
from llmserve.plan_book.checks import PlanError, PlanLimits
from llmserve.plan_book.leases import KeeperStats, LeaseKeeper
from llmserve.plan_book.prefix_cache import CACHE_HOLDER, WorkerPrefixCache
from llmserve.plan_book.reserve import auto_reserve_blocks
from llmserve.plan_book.state import Chunk, RequestState, StepWork

__all__ = ["CACHE_HOLDER", "CachingLeaseKeeper", "Chunk", "KeeperStats", "LeaseKeeper", "PlanBook", "PlanError",
           "PlanLimits", "RequestState", "StepWork", "WorkerPrefixCache", "auto_reserve_blocks"]
