"""The live worker's host tier for cached prefix blocks (issue 13; llmserve/prefix/host_tier.py,
llmserve/plan_book/prefix_cache.py): the torch copies between the KV cache and host memory.

The tier lives in the worker's process, beside its cache, not in the KV store: a demotion must be
copied before its block is reused (in the same step, between the leases and the forward pass) and
a promotion before the forward pass that reads it, so a store round trip would be on the step's
path; and only this process holds the KV and knows when it is written. The store stays the owner
of the host memory that others must see (checkpoints, which outlive the worker); this tier is a
cache that dies with the worker, sized by its own setting (`--prefix-host-tier-gb`).

On a GPU the payloads are host tensors (one per block), copied with one gather or scatter per
step; on a CPU worker the "device" pool is host memory too and a copy is a memcpy: the tier still
saves the prefill, at the cost of the copy (measured by the step's time).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmserve.plan_book import WorkerPrefixCache
from llmserve.prefix.host_tier import HostPrefixTier
from worker_svc.model.kv_cache import KvCache


class TorchKvMover:
    """Copies whole blocks of `cache` (every layer, K and V) to host tensors and back."""

    def __init__(self, cache: KvCache) -> None:
        self.cache = cache
        self.blocks_out = 0
        self.blocks_in = 0

    def copy_out(self, block_ids: Sequence[int]) -> list[torch.Tensor]:
        if not block_ids:
            return []
        data = self.cache.data  # [L, 2, N, bs, H, D]
        index = torch.tensor(list(block_ids), dtype=torch.long, device=data.device)
        blocks = data.index_select(2, index).movedim(2, 0)  # [n, L, 2, bs, H, D], a copy
        pin = data.device.type == "cuda"
        out = []
        for i in range(len(block_ids)):  # one tensor per block: each is freed on its own
            host = torch.empty(blocks.shape[1:], dtype=data.dtype, pin_memory=pin)
            host.copy_(blocks[i])
            out.append(host)
        self.blocks_out += len(out)
        return out

    def copy_in(self, block_ids: Sequence[int], payloads: Sequence[torch.Tensor]) -> None:
        if not block_ids:
            return
        data = self.cache.data
        index = torch.tensor(list(block_ids), dtype=torch.long, device=data.device)
        host = torch.stack(list(payloads))  # [n, L, 2, bs, H, D]
        data.index_copy_(2, index, host.to(data.device, non_blocking=False).movedim(0, 2))
        self.blocks_in += len(block_ids)


def host_tier_blocks(cache: KvCache, host_tier_gb: float) -> int:
    """Blocks of `cache`'s geometry in `host_tier_gb` GiB."""
    return int(host_tier_gb * (1 << 30)) // cache.spec.bytes_per_block


def build_prefix_cache(cache: KvCache, host_tier_gb: float) -> WorkerPrefixCache:
    """The worker's prefix cache, with a host tier of `host_tier_gb` GiB (0: none)."""
    blocks = host_tier_blocks(cache, host_tier_gb)
    if blocks == 0:
        return WorkerPrefixCache(cache.spec.block_size)
    return WorkerPrefixCache(cache.spec.block_size, HostPrefixTier(blocks), TorchKvMover(cache))
