"""Prefix caching with bidirectional KV, through real servers on 127.0.0.1:0 (the KV store and two
workers on a tiny random Llama, driven plan by plan): a best-effort request that started from a
prefix hit, preempted by checkpoint, resumes past the prefix the worker still caches: it shares
those blocks again, the store sends and the worker copies only the blocks after them, and its
tokens are exactly Hugging Face's greedy ones; the shared prefix stays cached and intact for the
next request that hits it. The checkpoint itself is complete (docs/prefix_caching.md: a request
may resume on a worker without the prefix), and a resume on the other worker, with no hit there,
restores every block with the same exact tokens."""

from __future__ import annotations

from llmserve.prefix import tenant_salt
from llmserve.runtime.channel import open_channel
from llmserve.v1 import kvstore_pb2_grpc, worker_pb2
from tests.integration.test_checkpoint_resume import (BE, Session, Stack, _decode, _sampling, _wait_complete,
                                                      hf_greedy, stack)

__all__ = ["stack"]  # the fixture, from the checkpoint tests
SALT = tenant_salt("t")
PROMPT = [5, 17, 33, 2, 41, 60, 7, 12, 90, 3, 14, 15]  # three full blocks of 4


def _new(rid: str, tokens: list[int], num_prompt: int, **fields) -> worker_pb2.NewRequest:  # type: ignore[no-untyped-def]
    return worker_pb2.NewRequest(request_id=rid, token_ids=tokens, num_prompt_tokens=num_prompt, sampling=_sampling(),
                                 service_class=BE, prefix_salt=SALT, **fields)


async def test_a_hit_preempted_by_checkpoint_resumes_exactly_and_its_prefix_stays_cached(stack: Stack) -> None:
    worker = stack.workers[0]
    cache = worker.service.runner.book.prefix
    session = Session(worker.address)
    await session.run(new_requests=[_new("a", PROMPT, len(PROMPT))],
                      scheduled=[worker_pb2.ScheduledRequest(request_id="a", num_tokens=12, num_computed_tokens=0,
                                                             sample=True)])
    await session.run(finished_request_ids=["a"])
    assert cache.index.num_cached == 3 and cache.index.num_reclaimable == 3

    longer = PROMPT + [8, 9]
    first = await session.run(
        new_requests=[_new("b", longer, len(longer), num_cached_tokens=12, num_computed_tokens=12)],
        scheduled=[worker_pb2.ScheduledRequest(request_id="b", num_tokens=2, num_computed_tokens=12, sample=True)])
    assert first.timing.num_prefill_tokens == 2 and cache.stats.hit_blocks == 3
    tokens = [first.sampled[0].token_id] + await _decode(session, "b", len(longer), 6)
    computed = len(longer) + len(tokens) - 1
    await session.run(preempted_request_ids=["b"], checkpoint_request_ids=["b"])
    async with open_channel(stack.kvstore.address) as channel:
        assert await _wait_complete(kvstore_pb2_grpc.KvStoreStub(channel), "b") == computed
    assert cache.index.num_reclaimable == 3  # b's references went with it; the prefix stays cached

    block_bytes = worker.service.description.bytes_per_block
    hits_before = cache.stats.hit_blocks
    resumed = await session.run(
        new_requests=[_new("b", longer + tokens, len(longer), num_output_tokens=len(tokens),
                           restore_from_checkpoint=True, num_computed_tokens=computed, num_cached_tokens=12)],
        scheduled=[worker_pb2.ScheduledRequest(request_id="b", num_tokens=1, num_computed_tokens=computed,
                                               sample=True)])
    assert list(resumed.restore_failed_request_ids) == [] and resumed.timing.num_prefill_tokens == 0
    # Its 5 checkpointed blocks (19 tokens): the 3 of the prefix are shared again, 2 copied in.
    assert cache.stats.hit_blocks == hits_before + 3 and resumed.timing.restore_bytes == 2 * block_bytes
    table = worker.service.runner.book.state("b").block_table
    assert len(cache.index.held("b")) == 3 and all(cache.is_cached_block(b) for b in table[:3])  # shared again
    tokens += [resumed.sampled[0].token_id] + await _decode(session, "b", computed + 1, 4)
    assert tokens == hf_greedy(stack.hf, longer, 12)
    await session.run(finished_request_ids=["b"])

    again = await session.run(
        new_requests=[_new("c", PROMPT, len(PROMPT), num_cached_tokens=8, num_computed_tokens=8)],
        scheduled=[worker_pb2.ScheduledRequest(request_id="c", num_tokens=4, num_computed_tokens=8, sample=True)])
    assert again.timing.num_prefill_tokens == 4 and cache.stats.missed_blocks == 0
    assert [again.sampled[0].token_id] + await _decode(session, "c", 12, 3) == hf_greedy(stack.hf, PROMPT, 4)
    await session.run(finished_request_ids=["c"])
    cache.index.check()
    await session.close()


async def test_a_resume_on_a_worker_without_the_prefix_restores_every_block_exactly(stack: Stack) -> None:
    """The checkpoint is complete: the other worker, which never cached the prefix, gets no hit
    claimed and restores all of it, with the same greedy tokens."""
    first, other = Session(stack.workers[0].address), Session(stack.workers[1].address)
    await first.run(new_requests=[_new("a", PROMPT, len(PROMPT))],
                    scheduled=[worker_pb2.ScheduledRequest(request_id="a", num_tokens=12, num_computed_tokens=0,
                                                           sample=True)])
    await first.run(finished_request_ids=["a"])
    longer = PROMPT + [8, 9]
    start = await first.run(
        new_requests=[_new("b", longer, len(longer), num_cached_tokens=12, num_computed_tokens=12)],
        scheduled=[worker_pb2.ScheduledRequest(request_id="b", num_tokens=2, num_computed_tokens=12, sample=True)])
    tokens = [start.sampled[0].token_id] + await _decode(first, "b", len(longer), 6)
    computed = len(longer) + len(tokens) - 1
    await first.run(preempted_request_ids=["b"], checkpoint_request_ids=["b"])
    async with open_channel(stack.kvstore.address) as channel:
        assert await _wait_complete(kvstore_pb2_grpc.KvStoreStub(channel), "b") == computed
    resumed = await other.run(
        new_requests=[_new("b", longer + tokens, len(longer), num_output_tokens=len(tokens),
                           restore_from_checkpoint=True, num_computed_tokens=computed)],
        scheduled=[worker_pb2.ScheduledRequest(request_id="b", num_tokens=1, num_computed_tokens=computed,
                                               sample=True)])
    block_bytes = stack.workers[1].service.description.bytes_per_block
    assert list(resumed.restore_failed_request_ids) == [] and resumed.timing.restore_bytes == 5 * block_bytes
    tokens += [resumed.sampled[0].token_id] + await _decode(other, "b", computed + 1, 4)
    assert tokens == hf_greedy(stack.hf, longer, 12)
    await other.run(finished_request_ids=["b"])
    await first.close()
    await other.close()
