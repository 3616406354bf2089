"""The live worker's host-tier copies (worker_svc/core/prefix_tier.py): a block copied out and
back into another block holds exactly the same KV in every layer, K and V; the tier's size in
blocks follows the cache's geometry; 0 GiB: no tier."""

from __future__ import annotations

import torch

from worker_svc.core.prefix_tier import TorchKvMover, build_prefix_cache, host_tier_blocks
from worker_svc.model.kv_cache import KvCache, KvCacheSpec


def _cache() -> KvCache:
    cache = KvCache(KvCacheSpec(num_layers=3, num_kv_heads=2, head_dim=4, block_size=4, dtype=torch.float32), 8, "cpu")
    cache.data.copy_(torch.randn_like(cache.data))
    return cache


def test_a_block_copied_out_and_back_into_another_holds_the_same_kv() -> None:
    cache = _cache()
    mover = TorchKvMover(cache)
    before = cache.data[:, :, [2, 5]].clone()
    payloads = mover.copy_out([2, 5])
    cache.data[:, :, [2, 5]] = 0.0  # the blocks are reused
    mover.copy_in([6, 1], payloads)
    assert torch.equal(cache.data[:, :, 6], before[:, :, 0]) and torch.equal(cache.data[:, :, 1], before[:, :, 1])
    assert payloads[0].data_ptr() != payloads[1].data_ptr() and (mover.blocks_out, mover.blocks_in) == (2, 2)


def test_the_tier_is_sized_in_blocks_and_zero_turns_it_off() -> None:
    cache = _cache()
    assert host_tier_blocks(cache, 1.0) == (1 << 30) // cache.spec.bytes_per_block
    assert build_prefix_cache(cache, 0.0).host_tier is None
    tier = build_prefix_cache(cache, 0.001).host_tier
    assert tier is not None and tier.capacity_blocks == host_tier_blocks(cache, 0.001)
