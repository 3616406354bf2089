"""HostTier: chunked and lazy checkpoints, restore checks, eviction and refusal."""

from __future__ import annotations

import pytest

from kvstore_svc.core import (
    CheckpointMismatchError,
    HostTier,
    HostTierFullError,
    InvalidSpecError,
    KvChunk,
    KvStore,
    UnknownCheckpointError,
)

SHAPE = (2, 2, 4, 1, 2)  # [layers, 2, block_size, kv_heads, head_dim]
BLOCK = 2 * 2 * 4 * 1 * 2 * 4  # float32: 128 bytes


def block_data(request: str, index: int) -> bytes:
    seed = (hash(request) + index) & 0xFF
    return bytes((seed + i) & 0xFF for i in range(BLOCK))


def chunk(request: str, index: int, data: bytes | None = None, offset: int = 0, **kw: object) -> KvChunk:
    payload = block_data(request, index) if data is None else data
    fields: dict[str, object] = dict(dtype="float32", shape=SHAPE, block_bytes=BLOCK)
    fields.update(kw)
    return KvChunk(request_id=request, block_index=index, data=payload, offset=offset, **fields)  # type: ignore[arg-type]


def store_full(tier: HostTier, request: str, num_blocks: int, num_tokens: int = 10) -> None:
    for index in range(num_blocks):
        tier.write(chunk(request, index, final=index == num_blocks - 1, num_tokens=num_tokens))


def test_lazy_checkpoint_over_several_writes_restores_in_order() -> None:
    tier = HostTier(10 * BLOCK)
    tier.write(chunk("r", 1))  # full blocks early, out of order
    tier.write(chunk("r", 0))
    with pytest.raises(UnknownCheckpointError, match="not complete"):
        tier.restore("r")
    # The tail block at preemption, in two pieces.
    tail = block_data("r", 2)
    tier.write(chunk("r", 2, tail[:50]))
    tier.write(chunk("r", 2, tail[50:], offset=50, final=True, num_tokens=41))
    data = tier.restore("r", "float32", SHAPE)
    assert data.blocks == (block_data("r", 0), block_data("r", 1), tail)
    assert (data.num_tokens, data.dtype, data.shape) == (41, "float32", SHAPE)
    assert tier.bytes_used == 3 * BLOCK and tier.num_restores == 1 and tier.num_checkpoints_total == 1
    assert tier.bytes_stored_total == 3 * BLOCK


def test_a_restore_from_a_first_block_sends_only_the_blocks_after_it() -> None:
    tier = HostTier(10 * BLOCK)
    store_full(tier, "r", 3, num_tokens=11)
    data = tier.restore("r", "float32", SHAPE, first_block=2)
    assert (data.first_block, data.blocks, data.num_tokens) == (2, (block_data("r", 2),), 11)
    assert tier.bytes_restored_total == BLOCK
    with pytest.raises(InvalidSpecError, match="first_block_index 3 is not below the 3 blocks"):
        tier.restore("r", first_block=3)


def test_restore_checks_dtype_and_shape() -> None:
    tier = HostTier(10 * BLOCK)
    store_full(tier, "r", 1)
    with pytest.raises(CheckpointMismatchError, match="holds float32, the worker expects float16"):
        tier.restore("r", expected_dtype="float16")
    with pytest.raises(CheckpointMismatchError, match="shape"):
        tier.restore("r", expected_dtype="float32", expected_shape=(2, 2, 8, 1, 1))
    assert tier.num_restores == 0


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (dict(dtype="float13"), "unknown dtype"),
        (dict(block_bytes=BLOCK + 1), "block_bytes"),
        (dict(shape=(2, 0, 4)), "positive dimensions"),
        (dict(offset=BLOCK - 1), "runs past"),
        (dict(request_id=""), "request_id is empty"),
    ],
)
def test_malformed_chunks_are_refused(bad: dict[str, object], fragment: str) -> None:
    tier = HostTier(10 * BLOCK)
    fields = dict(request_id="r", block_index=0, data=b"\x01" * 8, offset=0, block_bytes=BLOCK, dtype="float32", shape=SHAPE)
    fields.update(bad)
    with pytest.raises(InvalidSpecError, match=fragment):
        tier.write(KvChunk(**fields))  # type: ignore[arg-type]
    assert tier.bytes_used == 0 and tier.num_checkpoints == 0


def test_chunks_must_agree_with_the_checkpoint_and_come_in_order() -> None:
    tier = HostTier(10 * BLOCK)
    tier.write(chunk("r", 0, block_data("r", 0)[:64]))
    with pytest.raises(InvalidSpecError, match="expected 64"):
        tier.write(chunk("r", 0, b"x" * 8, offset=96))
    with pytest.raises(InvalidSpecError, match="differs from the checkpoint"):
        tier.write(chunk("r", 1, b"\x00" * 64, dtype="float16", shape=SHAPE, block_bytes=BLOCK // 2))
    with pytest.raises(InvalidSpecError, match="incomplete"):
        tier.write(chunk("r", 1, final=True))  # block 0 is half-written
    with pytest.raises(InvalidSpecError, match="no blocks"):
        tier.write(chunk("other", 0, b"", final=True))


def test_final_with_a_missing_block_is_refused() -> None:
    tier = HostTier(10 * BLOCK)
    tier.write(chunk("r", 0))
    with pytest.raises(InvalidSpecError, match=r"blocks \[1\] missing"):
        tier.write(chunk("r", 2, final=True))


def test_new_chunk_reopens_a_complete_checkpoint() -> None:
    tier = HostTier(10 * BLOCK)
    store_full(tier, "r", 2)
    tier.write(chunk("r", 2))  # checkpointed again after resuming: not restorable until final
    assert not tier.is_complete("r")
    tier.write(chunk("r", 3, final=True, num_tokens=60))
    assert len(tier.restore("r").blocks) == 4


def test_eviction_takes_least_recently_used_complete_checkpoints() -> None:
    tier = HostTier(6 * BLOCK)
    store_full(tier, "a", 2)
    store_full(tier, "b", 2)
    tier.write(chunk("partial", 0))  # incomplete: never evicted
    tier.write(chunk("partial", 1))
    tier.restore("a")  # a is now more recent than b
    tier.write(chunk("c", 0))  # needs one block: evicts b (2 blocks)
    assert tier.num_evictions == 1 and not tier.is_complete("b") and tier.num_blocks("b") == 0
    assert tier.is_complete("a") and tier.num_blocks("partial") == 2
    assert tier.bytes_used == 5 * BLOCK
    with pytest.raises(UnknownCheckpointError):
        tier.restore("b")


def test_refusal_when_eviction_cannot_make_room_evicts_nothing_and_drops_the_request() -> None:
    tier = HostTier(4 * BLOCK)
    store_full(tier, "done", 1)
    tier.write(chunk("p", 0))
    tier.write(chunk("p", 1))
    tier.write(chunk("q", 0))  # full now: done 1 + p 2 + q 1
    with pytest.raises(HostTierFullError, match="recompute"):
        # q needs 2 more blocks; evicting "done" frees only 1.
        tier.write(chunk("q", 1))
        tier.write(chunk("q", 2))
    assert tier.num_refusals == 1 and tier.num_evictions == 1  # q's block 1 evicted "done" first
    assert tier.num_blocks("q") == 0 and tier.num_blocks("p") == 2
    assert tier.bytes_used == 2 * BLOCK


def test_refusal_without_any_eviction() -> None:
    tier = HostTier(3 * BLOCK)
    store_full(tier, "done", 1)
    tier.write(chunk("p", 0))
    tier.write(chunk("p", 1))
    big = (2, 2, 8, 1, 2)  # twice the block: evicting "done" cannot make room
    with pytest.raises(HostTierFullError, match="1 evictable|128 evictable"):
        tier.write(chunk("q", 0, b"\x01" * 16, shape=big, block_bytes=2 * BLOCK))
    assert tier.num_evictions == 0 and tier.is_complete("done") and tier.bytes_used == 3 * BLOCK
    assert tier.num_checkpoints == 2


def test_drop_frees_bytes() -> None:
    tier = HostTier(4 * BLOCK)
    store_full(tier, "r", 3)
    assert tier.drop("r") is True and tier.drop("r") is False
    assert tier.bytes_used == 0 and tier.num_checkpoints == 0


def test_checkpoint_writer_keeps_one_request_per_call_and_abort_drops() -> None:
    store = KvStore(10.0, 10 * BLOCK, clock=lambda: 0.0)
    writer = store.open_checkpoint()
    writer.write(chunk("r", 0))
    with pytest.raises(InvalidSpecError, match="one request"):
        writer.write(chunk("s", 0))
    writer.abort()
    assert store.host_tier.num_checkpoints == 0
    writer = store.open_checkpoint()
    with pytest.raises(InvalidSpecError, match="no chunk"):
        writer.finish()
    writer.write(chunk("r", 0, final=True, num_tokens=3))
    assert writer.finish() == 1 and writer.bytes_stored == BLOCK


def test_counters_track_bytes_both_ways() -> None:
    store = KvStore(10.0, 10 * BLOCK, clock=lambda: 0.0)
    store_full(store.host_tier, "r", 2)
    store.restore("r")
    store.restore("r")
    metrics = store.metrics()
    assert (metrics.checkpoint_bytes_total, metrics.restored_bytes_total) == (2 * BLOCK, 4 * BLOCK)
    assert (metrics.checkpoints_total, metrics.restores_total, metrics.num_checkpoints) == (1, 2, 1)
    assert metrics.host_tier_bytes == 2 * BLOCK and metrics.host_tier_capacity_bytes == 10 * BLOCK
