"""The simulated worker's prefix cache on its own: a claim that no step admits is released, a
request the worker no longer holds releases its blocks, a re-admission in one plan swaps owners,
and the unreferenced blocks fit the pool's free space."""

from __future__ import annotations

from llmserve.plan import BatchPlan, NewRequest, ScheduledRequest
from llmserve.plan_book import RequestState
from llmserve.types import SamplingParams, ServiceClass
from scheduler_svc.core.request import Request
from scheduler_svc.sim.prefix import SimPrefixCache

CHAIN = tuple(range(100, 108))  # 8 blocks of 16 tokens
SAMPLING = SamplingParams(max_tokens=8, seed=1)


def _request(rid: str) -> Request:
    return Request(rid, (1,) * 130, SAMPLING, block_hashes=CHAIN)


def _new(rid: str, cached: int = 0) -> NewRequest:
    return NewRequest(rid, (1,) * 130, 130, SAMPLING, ServiceClass.BEST_EFFORT, 0, cached, num_cached_tokens=cached)


def _state(new: NewRequest) -> RequestState:
    return RequestState.admit(new)


def _computed(cache: SimPrefixCache, rid: str, free: int = 1000) -> RequestState:
    """Admits `rid` uncached and computes its whole prompt in one step."""
    new = _new(rid)
    state = _state(new)
    cache.after_step(BatchPlan(1, new_requests=(new,), scheduled=(ScheduledRequest(rid, 130, 0, True),)),
                     {rid: state}, {rid: CHAIN}, free)
    return state


def test_a_claim_no_step_admits_is_released() -> None:
    cache = SimPrefixCache(16)
    _computed(cache, "a")
    cache.after_step(BatchPlan(2, finished_request_ids=("a",)), {}, {}, 1000)  # a is dropped: blocks stay cached
    assert cache.index.num_reclaimable == 8
    b = _request("b")
    assert cache.cached_tokens(b) == 128 and cache.claim(b) == 128
    assert cache.index.num_referenced == 8
    cache.after_step(BatchPlan(3, new_requests=(_new("b", 128),)), {}, {"b": CHAIN}, 1000)  # the step failed
    assert cache.index.num_referenced == 0
    cache.check()


def test_the_worker_dropping_a_request_releases_it_and_a_readmission_swaps_owners() -> None:
    cache = SimPrefixCache(16)
    first = _computed(cache, "a")
    assert cache.index.num_referenced == 8 and cache.stats.lookups == 1
    again = _new("a", 128)
    cache.claim(_request("a"))  # planned while the preempting plan was still in flight
    assert cache.index.refs(CHAIN[0]) == 2
    state = _state(again)
    assert state is not first
    cache.after_step(BatchPlan(2, new_requests=(again,), scheduled=(ScheduledRequest("a", 2, 128, True),)),
                     {"a": state}, {"a": CHAIN}, 1000)
    assert cache.index.refs(CHAIN[0]) == 1  # the first admission's references went with its state
    assert cache.stats.lookups == 1 and cache.stats.readmission_hit_blocks == 8
    cache.after_step(BatchPlan(3, finished_request_ids=("a",)), {}, {}, 1000)
    assert cache.index.num_referenced == 0
    cache.check()


def test_unreferenced_blocks_fit_the_free_space() -> None:
    cache = SimPrefixCache(16)
    _computed(cache, "a")
    cache.after_step(BatchPlan(2, finished_request_ids=("a",)), {}, {}, 3)
    assert cache.index.num_cached == 3 and cache.stats.evicted_blocks == 5
    assert cache.cached_tokens(_request("b")) == 48  # the chain's head outlived its tail
