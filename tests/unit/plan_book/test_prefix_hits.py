"""The plan book with the worker's prefix cache (llmserve/plan_book/hits.py, prefix_cache.py),
on its own: a hit starts the block table with the cached blocks and leases only the rest; a
claim the cache no longer covers (evicted since the scheduler heard, or not a whole number of
blocks) is computed in the same step and counted as recomputed; a request without a salt caches
nothing; the report nets blocks cached and evicted between two results."""

from __future__ import annotations

from llmserve.plan import BatchPlan, NewRequest
from llmserve.plan_book import PlanBook, WorkerPrefixCache
from llmserve.prefix import tenant_salt
from llmserve.types import SamplingParams
from tests.unit.plan_book.test_book import BE, LIMITS, Blocks, begin, run, sched

SALT = tenant_salt("t")
PROMPT = tuple(range(1, 19))  # 18 tokens: four full blocks of 4


def cached_new(rid: str, cached: int = 0, salt: int = SALT, tokens: tuple[int, ...] = PROMPT) -> NewRequest:
    return NewRequest(rid, tokens, len(tokens), SamplingParams(max_tokens=8, seed=1), BE, 0, cached,
                      num_cached_tokens=cached, prefix_salt=salt)


def warm() -> tuple[PlanBook, Blocks, WorkerPrefixCache, list[int]]:
    """A book whose cache holds PROMPT's four full blocks (request a, finished)."""
    cache = WorkerPrefixCache(4)
    book, blocks = PlanBook(4, LIMITS, prefix=cache), Blocks()
    run(book, blocks, BatchPlan(0, (cached_new("a"),), (sched("a", 18, 0),)))
    table = list(book.state("a").block_table)
    begin(book, BatchPlan(1, finished_request_ids=("a",)))
    cache.release("a")  # what the keeper does with the step's releases
    book.grant(())
    book.commit(())
    return book, blocks, cache, table


def test_a_hit_starts_with_the_cached_blocks_and_leases_only_the_rest() -> None:
    book, blocks, cache, table = warm()
    cached, evicted = cache.take_report()
    assert cached == cache.chain(cached_new("x")) and evicted == ()  # a's four blocks, reported once
    delta = begin(book, BatchPlan(2, (cached_new("b", 16),), (sched("b", 2, 16),)))
    assert [lease.num_blocks for lease in delta.leases] == [1] and delta.restores == ()
    assert book.state("b").block_table == table[:4] and book.state("b").num_computed == 16
    book.grant(blocks.apply(delta))
    work = book.work()
    assert (work.num_prefill_tokens, work.num_recomputed_tokens) == (2, 0)
    book.commit(lambda state: 7)
    assert cache.stats.hit_blocks == 4 and cache.stats.missed_blocks == 0
    assert cache.index.refs(cache.index.held("b")[0]) == 1  # b references the shared prefix


def test_a_claim_the_cache_no_longer_covers_is_computed_in_the_step() -> None:
    book, blocks, cache, table = warm()
    cache.evict(2)  # LRU: the chain's tail first, blocks 3 and 2
    delta = begin(book, BatchPlan(2, (cached_new("b", 16),), (sched("b", 2, 16),)))
    assert book.state("b").num_computed == 8 and book.state("b").block_table == table[:2]
    assert [lease.num_blocks for lease in delta.leases] == [3]
    book.grant(blocks.apply(delta))
    work = book.work()
    assert (work.num_prefill_tokens, work.num_recomputed_tokens) == (10, 8)
    assert [(c.start, c.end) for c in book.chunks()] == [(8, 18)]
    book.commit(lambda state: 7)
    assert cache.stats.missed_blocks == 2 and book.state("b").num_computed == 18
    # b computed blocks 2 and 3 again, and named them: they are cached once more
    assert cache.index.match(cache.chain(cached_new("x")), 4) == 4


def test_a_claim_of_a_partial_block_is_computed_not_trusted() -> None:
    book, blocks, cache, table = warm()
    begin(book, BatchPlan(2, (cached_new("b", 10),), (sched("b", 8, 10),)))
    assert book.state("b").num_computed == 8 and book.state("b").block_table == table[:2]


def test_without_a_salt_nothing_is_cached_and_a_report_nets_out() -> None:
    cache = WorkerPrefixCache(4)
    book, blocks = PlanBook(4, LIMITS, prefix=cache), Blocks()
    run(book, blocks, BatchPlan(0, (cached_new("a", salt=0),), (sched("a", 18, 0),)))
    assert cache.index.num_cached == 0 and cache.take_report() == ((), ())
    run(book, blocks, BatchPlan(1, (cached_new("b"),), (sched("b", 18, 0),)))
    cached, evicted = cache.take_report()
    assert len(cached) == 4 and evicted == ()
    cache.release("b")
    gone = cache.evict(1)
    assert len(gone) == 1 and cache.take_report() == ((), (cached[-1],))  # the tail goes first
