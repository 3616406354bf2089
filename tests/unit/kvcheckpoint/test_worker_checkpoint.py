"""The worker's checkpoint pieces: block bytes round-trip through the store's layout (fp32 and
bf16, non-contiguous block ids), the tracker sends only what the store lacks (lazy full blocks,
then the tail), completes lazily-written checkpoints when a request's state goes, and refuses
restores of another format or too short (a good one is copied in)."""

from __future__ import annotations

import pytest
import torch

from llmserve.plan import RestoreSpec
from llmserve.plan_book import RequestState
from llmserve.types import SamplingParams, ServiceClass
from worker_svc.core.checkpoint import BlockFormat, CheckpointTracker, RestoredKv, read_blocks, write_blocks
from worker_svc.model.kv_cache import KvCache, KvCacheSpec


def _cache(dtype: torch.dtype = torch.float32, num_blocks: int = 12) -> KvCache:
    cache = KvCache(KvCacheSpec(num_layers=2, num_kv_heads=2, head_dim=8, block_size=4, dtype=dtype), num_blocks, "cpu")
    cache.data.copy_(torch.randn(cache.data.shape).to(dtype))
    return cache


def _state(rid: str, table: list[int], computed: int, cls: ServiceClass = ServiceClass.BEST_EFFORT) -> RequestState:
    state = RequestState(rid, list(range(computed + 1)), 3, SamplingParams(max_tokens=16, temperature=0.0), cls, 0)
    state.block_table, state.num_computed = list(table), computed
    return state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocks_round_trip_in_store_layout(dtype: torch.dtype) -> None:
    src, dst = _cache(dtype), _cache(dtype)
    blocks = read_blocks(src, [7, 2, 9])
    fmt = BlockFormat.of(src)
    assert fmt.shape == (2, 2, 4, 2, 8) and all(len(b) == fmt.nbytes for b in blocks)
    # Block 2 in the store layout is [layers, K/V, tokens, heads, dim] of that block.
    expected = src.data[:, :, 2].contiguous().view(torch.uint8).numpy().tobytes()
    assert blocks[1] == expected
    write_blocks(dst, [0, 5, 11], blocks)
    for a, b in ((7, 0), (2, 5), (9, 11)):
        assert torch.equal(src.data[:, :, a], dst.data[:, :, b])


def test_tracker_sends_lazy_full_blocks_then_only_the_tail() -> None:
    cache = _cache()
    tracker = CheckpointTracker(cache, lazy_blocks=2)
    state = _state("be", [3, 1, 4, 0, 5], computed=9)  # 2 full blocks + 1 token
    rt = _state("rt", [6, 7, 8], computed=12, cls=ServiceClass.REAL_TIME)
    lazy = tracker.lazy([state, rt])
    assert [(w.request_id, w.first_block_index, len(w.blocks), w.final) for w in lazy] == [("be", 0, 2, False)]
    assert tracker.lazy([state]) == []  # nothing new
    final = tracker.preempt(state)
    assert final is not None and (final.first_block_index, len(final.blocks), final.num_tokens, final.final) == (2, 1, 9, True)
    assert final.blocks[0] == read_blocks(cache, [4])[0]
    # Preempted, the request has left this worker: the scheduler's checkpoint book, not the
    # tracker, remembers it (and sends its drop when it leaves the system, to whichever worker).
    assert not tracker.finish("be") and not tracker.finish("rt")
    assert tracker.lazy([_state("be2", [3, 1, 4, 0, 5], computed=9)]) and tracker.finish("be2")  # a running one's


def test_dropped_state_completes_a_lazy_checkpoint_only() -> None:
    tracker = CheckpointTracker(_cache(), lazy_blocks=1)
    assert tracker.drop_state("never") is None
    state = _state("be", [0, 1, 2], computed=9)
    tracker.lazy([state])
    done = tracker.drop_state("be")
    assert done is not None and (done.blocks, done.num_tokens, done.final) == ((), 8, True)
    tracker.restored("r", 10)  # a restored checkpoint is complete already: nothing to send
    assert tracker.drop_state("r") is None


def test_restore_checks_format_and_length() -> None:
    cache = _cache()
    tracker = CheckpointTracker(cache, lazy_blocks=0)
    fmt = tracker.format
    blocks = read_blocks(cache, [1, 2, 3])
    spec = RestoreSpec("x", 9)
    good = RestoredKv(fmt.dtype, fmt.shape, 10, blocks)
    for bad in (None, RestoredKv("bfloat16", fmt.shape, 10, blocks), RestoredKv(fmt.dtype, (2, 2, 8, 2, 8), 10, blocks),
                RestoredKv(fmt.dtype, fmt.shape, 8, blocks), RestoredKv(fmt.dtype, fmt.shape, 10, blocks[:2])):
        state = _state("x", [6, 7, 8], computed=0)
        assert not tracker.apply_restore(state, spec, bad) and state.num_computed == 0
    state = _state("x", [6, 7, 8], computed=0)
    # The tracker only copies; the plan book then counts the tokens computed (PlanBook.restore).
    assert tracker.apply_restore(state, spec, good) and state.num_computed == 0
    assert torch.equal(cache.data[:, :, 6], cache.data[:, :, 1]) and tracker.saved_blocks("x") == 2


def test_a_restore_past_a_prefix_hit_writes_only_the_blocks_after_it() -> None:
    """Blocks before `first_block` are the request's shared prefix: never written, and a fetch
    from `first_block` (or from earlier) fills exactly the rest."""
    cache = _cache()
    tracker = CheckpointTracker(cache, lazy_blocks=0)
    fmt = tracker.format
    before = cache.data.clone()
    spec = RestoreSpec("x", 9, first_block=1)
    fetched = RestoredKv(fmt.dtype, fmt.shape, 10, read_blocks(cache, [2, 3]), first_block=1)
    state = _state("x", [0, 6, 7], computed=4)  # block 0: the hit's
    assert tracker.apply_restore(state, spec, fetched)
    assert torch.equal(cache.data[:, :, 0], before[:, :, 0])  # the shared block is untouched
    assert torch.equal(cache.data[:, :, 6], before[:, :, 2]) and torch.equal(cache.data[:, :, 7], before[:, :, 3])
    whole = RestoredKv(fmt.dtype, fmt.shape, 10, read_blocks(cache, [1, 2, 3]))
    state = _state("y", [0, 4, 5], computed=4)
    assert tracker.apply_restore(state, spec, whole)  # a whole checkpoint: its first block is skipped
    assert torch.equal(cache.data[:, :, 4], before[:, :, 2]) and torch.equal(cache.data[:, :, 0], before[:, :, 0])
    late = RestoredKv(fmt.dtype, fmt.shape, 10, read_blocks(cache, [3]), first_block=2)
    assert not tracker.apply_restore(_state("z", [0, 4, 5], computed=4), spec, late)  # lacks block 1


def test_lazy_writes_of_several_requests_in_one_step_carry_each_its_own_blocks() -> None:
    """The step's lazy writes are read in one gather: each request's write holds its own blocks'
    bytes, in its table's order, as reading them one request at a time gives."""
    cache = _cache()
    tracker = CheckpointTracker(cache, lazy_blocks=1)
    states = [_state("a", [3, 1, 4], computed=9), _state("rt", [0, 2], computed=8, cls=ServiceClass.REAL_TIME),
              _state("b", [6, 5], computed=8), _state("c", [7], computed=3)]  # c: no full block yet
    writes = tracker.lazy(states)
    assert [(w.request_id, w.first_block_index, len(w.blocks)) for w in writes] == [("a", 0, 2), ("b", 0, 2)]
    assert writes[0].blocks == read_blocks(cache, [3, 1]) and writes[1].blocks == read_blocks(cache, [6, 5])
    assert tracker.lazy(states) == []
