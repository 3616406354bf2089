"""A new request's prefix-cache hit as the plan book admits it (issue 13): the plan claims
`num_cached_tokens`; the worker's cache (prefix_cache.py) serves what it still holds of them, and
what it no longer holds (evicted after the scheduler last heard) is computed in the same step, as
a failed restore is: the tokens stay exact, the step does a little more work. A book without a
cache (the simulated worker's, whose cache is scheduler_svc/sim/prefix.py) takes the plan's word:
the request starts at `num_cached_tokens` and leases every block, its cached prefix included."""

from __future__ import annotations

from collections.abc import Sequence

from llmserve.plan import NewRequest
from llmserve.plan_book.prefix_cache import WorkerPrefixCache
from llmserve.plan_book.state import RequestState

# request -> (its prompt chain, blocks of its claimed hit the cache holds now)
Hits = dict[str, tuple[tuple[int, ...], int]]


def prefix_hits(prefix: WorkerPrefixCache | None, new_requests: Sequence[NewRequest]) -> Hits:
    """The new requests to cache or claiming a hit, before anything changes (admit's checks)."""
    hits: Hits = {}
    if prefix is None:  # the simulated worker: its cache (scheduler_svc/sim/prefix.py) is the plan's word
        return hits
    for new in new_requests:
        chain = prefix.chain(new)
        if chain or new.num_cached_tokens:
            hits[new.request_id] = (chain, prefix.available(chain, new.num_cached_tokens))
    return hits


def admit_new(states: dict[str, RequestState], new_requests: Sequence[NewRequest], hits: Hits,
              prefix: WorkerPrefixCache | None, block_size: int) -> int:
    """Creates the new requests' states, a hit's block table starting with its cached blocks
    (referenced from now on); returns the claimed tokens no longer cached, computed this step."""
    recomputed = 0
    for new in new_requests:
        state = states[new.request_id] = RequestState.admit(new)
        hit = hits.get(new.request_id)
        if hit is None:
            continue
        chain, available = hit
        claimed = new.num_cached_tokens // block_size
        state.block_table.extend(prefix.admit(new.request_id, chain, available, claimed))  # type: ignore[union-attr]
        if available * block_size < new.num_cached_tokens:  # evicted meanwhile (or a partial block claimed)
            state.num_computed = available * block_size
            recomputed += new.num_cached_tokens - state.num_computed
    return recomputed
