"""The plan book with the worker's prefix cache (llmserve/plan_book/hits.py, prefix_cache.py),
on its own: a hit starts the block table with the cached blocks and leases only the rest; a
claim the cache no longer covers (evicted since the scheduler heard, or not a whole number of
blocks) is computed in the same step and counted as recomputed; a request without a salt caches
nothing; the report nets blocks cached and evicted between two results. A request resumed from its
checkpoint past a hit shares the hit's blocks and restores only the rest (a stale part of the
claim comes from the checkpoint too; a failed restore recomputes only past the hit)."""

from __future__ import annotations

import pytest

from llmserve.plan import BatchPlan, NewRequest, RestoreSpec
from llmserve.plan_book import PlanBook, PlanError, WorkerPrefixCache
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
    cached, evicted, _ = cache.take_report()
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
    assert cache.index.num_cached == 0 and cache.take_report() == ((), (), ())
    run(book, blocks, BatchPlan(1, (cached_new("b"),), (sched("b", 18, 0),)))
    cached, evicted, _ = cache.take_report()
    assert len(cached) == 4 and evicted == ()
    cache.release("b")
    gone = cache.evict(1)
    assert len(gone) == 1 and cache.take_report() == ((), (cached[-1],), ())  # the tail goes first


def test_a_readmission_keeps_its_references_when_the_earlier_admission_is_released() -> None:
    """A preempted request re-admitted before its release reached the keeper (the same step's
    releases): releasing the earlier admission must not drop the new one's references."""
    book, blocks, cache, table = warm()
    chain = cache.chain(cached_new("x"))
    cache.admit("b", chain, 4, 0, 4)
    cache.admit("b", chain, 4, 0, 4)  # re-admitted; the first admission's release is queued
    cache.release("b")  # the queued release: the first admission's
    assert cache.index.refs(chain[0]) == 1 and cache.index.num_reclaimable == 0
    cache.release("b")
    assert cache.index.refs(chain[0]) == 0 and cache.index.num_reclaimable == 4
    cache.check()


def test_an_evicted_block_is_demoted_then_promoted_into_a_fresh_block_with_its_kv() -> None:
    """With a host tier: evicted blocks are copied out at the next grant (before any write), a
    later hit takes them back into fresh blocks (copied in), and they are cached again once
    named; the report says demoted, then cached."""
    from llmserve.prefix.host_tier import HostPrefixTier

    class Mover:
        def __init__(self) -> None:
            self.kv: dict[int, str] = {}
            self.out: list[int] = []
            self.into: list[tuple[int, str]] = []

        def copy_out(self, ids):  # noqa: ANN001, ANN202
            self.out += ids
            return [self.kv.get(b, f"kv{b}") for b in ids]

        def copy_in(self, ids, payloads):  # noqa: ANN001, ANN202
            self.into += list(zip(ids, payloads))

    mover = Mover()
    cache = WorkerPrefixCache(4, HostPrefixTier(8), mover)
    book, blocks = PlanBook(4, LIMITS, prefix=cache), Blocks()
    run(book, blocks, BatchPlan(0, (cached_new("a"),), (sched("a", 18, 0),)))
    table = list(book.state("a").block_table)
    begin(book, BatchPlan(1, finished_request_ids=("a",)))
    cache.release("a")
    book.grant(())
    book.commit(())
    chain = cache.chain(cached_new("x"))
    cached, _, _ = cache.take_report()
    assert cached == chain
    assert cache.evict(2) == [table[3], table[2]]  # the tail first, demoted (copied at the next grant)
    assert cache.take_report() == ((), (), (chain[3], chain[2])) and mover.out == []
    delta = begin(book, BatchPlan(2, (cached_new("b", 16),), (sched("b", 2, 16),)))
    assert book.state("b").block_table == table[:2] and book.state("b").num_computed == 16  # 2 device + 2 host
    assert [lease.num_blocks for lease in delta.leases] == [3]  # the two promoted blocks and the last
    grants = blocks.apply(delta)
    book.grant(grants)
    assert sorted(mover.out) == sorted([table[2], table[3]])  # copied out at the grant, before the forward
    fresh = list(grants[0].block_ids[:2])
    assert mover.into == [(fresh[0], f"kv{table[2]}"), (fresh[1], f"kv{table[3]}")]
    assert (book.work().num_prefill_tokens, book.work().num_recomputed_tokens) == (2, 0)
    book.commit(lambda state: 7)
    assert cache.index.match(chain) == 4 and len(cache.host_tier) == 0  # type: ignore[arg-type]
    cached, evicted, demoted = cache.take_report()
    assert set(cached) == {chain[2], chain[3]} and demoted == ()
    assert cache.stats.host_hit_blocks == 2 and cache.stats.hit_blocks == 4 and cache.stats.demoted_blocks == 2
    cache.check()


def resumed_new(rid: str, cached: int, computed: int) -> NewRequest:
    """A request back from its checkpoint (PROMPT and 3 outputs, `computed` tokens saved) whose
    admission claims `cached` tokens of it from the prefix cache."""
    tokens = PROMPT + (50, 51, 52)
    return NewRequest(rid, tokens, len(PROMPT), SamplingParams(max_tokens=8, seed=1), BE, 3, computed,
                      num_cached_tokens=cached, prefix_salt=SALT)


def test_a_resume_past_a_hit_shares_the_prefix_and_restores_only_the_rest() -> None:
    book, blocks, cache, table = warm()
    delta = begin(book, BatchPlan(2, (resumed_new("b", 16, 20),), (sched("b", 1, 20),)))
    assert delta.restores == (RestoreSpec("b", 20, first_block=4),)  # blocks 0-3 are the hit's
    assert [lease.num_blocks for lease in delta.leases] == [2]  # blocks 4 and 5 only
    assert book.state("b").block_table == table[:4]
    book.grant(blocks.apply(delta))
    book.restore("b", True)
    work = book.work()
    assert (work.num_decode_seqs, work.num_prefill_tokens, work.num_recomputed_tokens) == (1, 0, 0)
    book.commit(lambda state: 7)
    assert cache.stats.hit_blocks == 4 and cache.index.refs(cache.index.held("b")[0]) == 1


def test_a_stale_hit_under_a_resume_is_restored_and_a_failed_restore_recomputes_after_the_hit() -> None:
    book, blocks, cache, table = warm()
    cache.evict(2)  # blocks 2 and 3 of the claim are gone: the checkpoint has them
    delta = begin(book, BatchPlan(2, (resumed_new("b", 16, 20),), (sched("b", 1, 20),)))
    assert delta.restores == (RestoreSpec("b", 20, first_block=2),)
    book.grant(blocks.apply(delta))
    book.restore("b", True)
    assert book.work().num_recomputed_tokens == 0
    book.commit(lambda state: 7)

    book, blocks, cache, table = warm()
    delta = begin(book, BatchPlan(2, (resumed_new("b", 16, 20),), (sched("b", 1, 20),)))
    book.grant(blocks.apply(delta))
    book.restore("b", False)  # the checkpoint is gone: only what the hit does not cover is computed
    work = book.work()
    assert (work.num_prefill_tokens, work.num_recomputed_tokens, work.restore_failed_request_ids) == (5, 4, ("b",))
    assert [(c.start, c.end) for c in book.chunks()] == [(16, 21)]


def test_a_resume_may_not_claim_more_than_its_checkpoint() -> None:
    book, blocks, cache, table = warm()
    with pytest.raises(PlanError, match="num_cached_tokens 16 must be at most num_computed_tokens 12"):
        begin(book, BatchPlan(2, (resumed_new("b", 16, 12),), (sched("b", 9, 12),)))
