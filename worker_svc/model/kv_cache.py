"""The paged KV cache: one tensor for all layers, sized by blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker_svc.model.config import ModelConfig


@dataclass(frozen=True)
class KvCacheSpec:
    """Geometry of the cache. A block holds `block_size` tokens of every layer, K and V."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype

    @classmethod
    def for_model(cls, config: ModelConfig, block_size: int, dtype: torch.dtype) -> KvCacheSpec:
        if block_size <= 0 or block_size & (block_size - 1):
            raise ValueError(f"--block-size must be a power of two, got {block_size}")
        return cls(config.num_layers, config.num_kv_heads, config.head_dim, block_size, dtype)

    @property
    def bytes_per_block(self) -> int:
        element = torch.empty((), dtype=self.dtype).element_size()
        return self.num_layers * 2 * self.block_size * self.num_kv_heads * self.head_dim * element

    @property
    def layer_bytes_per_token(self) -> int:
        """One layer's K and V of one token."""
        return self.bytes_per_block // (self.num_layers * self.block_size)

    def num_blocks_for_memory(self, memory_gb: float) -> int:
        """How many blocks fit in `memory_gb` GiB."""
        return int(memory_gb * (1 << 30)) // self.bytes_per_block


class KvCache:
    """`data` is `[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]`; layer i's K and V
    caches are `data[i, 0]` and `data[i, 1]`, each in the design's per-layer layout
    `[num_blocks, block_size, num_kv_heads, head_dim]` and contiguous."""

    def __init__(self, spec: KvCacheSpec, num_blocks: int, device: torch.device | str) -> None:
        if num_blocks <= 0:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        self.spec = spec
        self.num_blocks = num_blocks
        self.data = torch.zeros(
            spec.num_layers, 2, num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim,
            dtype=spec.dtype, device=device,
        )

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[index, 0], self.data[index, 1]
