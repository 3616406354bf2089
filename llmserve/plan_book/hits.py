"""A new request's prefix-cache hit as the plan book admits it (issue 13): the plan claims
`num_cached_tokens`; the worker's cache (prefix_cache.py) serves what it still holds of them, on
the device (the block table starts with those blocks) and then in its host tier (those blocks are
leased fresh with the rest and copied in before the step's forward pass), and what it no longer
holds (evicted after the scheduler last heard) is computed in the same step, as a failed restore
is: the tokens stay exact, the step does a little more work. A book without a cache (the tests'
fake workers) takes the plan's word: the request starts at `num_cached_tokens` and leases every
block, its cached prefix included."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmserve.plan import NewRequest
from llmserve.plan_book.prefix_cache import WorkerPrefixCache
from llmserve.plan_book.state import RequestState

# request -> (its prompt chain, blocks of its claimed hit on the device now, then in the host tier)
Hits = dict[str, tuple[tuple[int, ...], int, int]]


def prefix_hits(prefix: WorkerPrefixCache | None, new_requests: Sequence[NewRequest]) -> Hits:
    """The new requests to cache or claiming a hit, before anything changes (admit's checks)."""
    hits: Hits = {}
    if prefix is None:  # no cache: the plan's word
        return hits
    for new in new_requests:
        chain = prefix.chain(new)
        if chain or new.num_cached_tokens:
            hits[new.request_id] = (chain, *prefix.available(chain, new.num_cached_tokens))
    return hits


def admit_new(states: dict[str, RequestState], new_requests: Sequence[NewRequest], hits: Hits,
              prefix: WorkerPrefixCache | None, block_size: int, restores: Mapping[str, int]) -> int:
    """Creates the new requests' states, a hit's block table starting with its cached device
    blocks (referenced from now on; its host blocks follow once granted and copied); returns the
    claimed tokens no longer cached, computed this step. A resumed request (in `restores`) starts
    at what its hit still holds; its checkpoint covers the rest of the claim, so nothing of it is
    recomputed unless the restore fails (`PlanBook.work` counts that)."""
    recomputed = 0
    for new in new_requests:
        state = states[new.request_id] = RequestState.admit(new)
        hit = hits.get(new.request_id)
        if hit is None:
            continue
        chain, device, host = hit
        claimed = new.num_cached_tokens // block_size
        ids, host = prefix.admit(new.request_id, chain, device, host, claimed)  # type: ignore[union-attr]
        state.block_table.extend(ids)
        if prefix.on_admit is not None:  # type: ignore[union-attr]
            prefix.on_admit(new, chain, device, host)  # type: ignore[union-attr]
        available = device + host
        if available * block_size < new.num_cached_tokens:  # evicted meanwhile (or a partial block claimed)
            state.num_computed = available * block_size
            if new.request_id not in restores:
                recomputed += new.num_cached_tokens - state.num_computed
    return recomputed
