"""The simulated KV store host tier, for bidirectional-KV experiments (the SimWorker's optional
`host_tier`; benchmarks/bench_bidirectional_kv.py). What it models, as docs/bidirectional_kv.md
says the store and the real worker do:

- a preempted request's checkpoint holds the KV of its computed tokens; the tier holds
  `capacity_bytes` and, like the store's, evicts complete checkpoints least recently used first,
  or refuses (the worker then reports the request in `checkpoint_failed_request_ids`: recompute);
- a resumed request is restored when the tier holds enough of its tokens (else the plan book has
  the step recompute its prefix); only its blocks past its prefix-cache hit are copied in;
- copies cost `bytes / link_bytes_per_s` (device <-> host), added to the step. With lazy
  checkpointing the full blocks of running best-effort requests were copied in the background
  while they ran, so a preemption is charged only its tail block (`lazy=True`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from llmserve.types import cdiv


@dataclass
class HostTierStats:
    bytes_saved: int = 0
    bytes_restored: int = 0
    num_checkpoints: int = 0
    num_restores: int = 0
    num_refusals: int = 0
    num_evictions: int = 0
    num_failed_restores: int = 0
    recomputed_tokens: int = 0  # by failed restores
    transfer_s: float = 0.0


class SimHostTier:
    """Checkpoints by request id (tokens held, LRU first) and the cost of moving them."""

    def __init__(self, block_size: int, kv_bytes_per_token: int, capacity_bytes: int,
                 link_bytes_per_s: float = 25e9, lazy: bool = True) -> None:
        self.block_size = block_size
        self.block_bytes = kv_bytes_per_token * block_size
        self.capacity = capacity_bytes
        self.link_bytes_per_s = link_bytes_per_s
        self.lazy = lazy
        self.tier: OrderedDict[str, int] = OrderedDict()  # request -> tokens held, LRU first
        self.used_bytes = 0
        self.stats = HostTierStats()

    def _bytes(self, tokens: int) -> int:
        return cdiv(tokens, self.block_size) * self.block_bytes

    def checkpoint(self, request_id: str, num_tokens: int) -> int | None:
        """Stores a preempted request's checkpoint; returns the bytes copied now (None: refused)."""
        self.drop(request_id)
        need = self._bytes(num_tokens)
        while self.used_bytes + need > self.capacity and self.tier:
            _, held = self.tier.popitem(last=False)
            self.used_bytes -= self._bytes(held)
            self.stats.num_evictions += 1
        if self.used_bytes + need > self.capacity:
            self.stats.num_refusals += 1
            return None
        self.tier[request_id] = num_tokens
        self.used_bytes += need
        self.stats.num_checkpoints += 1
        self.stats.bytes_saved += need
        # Lazily, every full block already went while the request ran: only the tail now.
        return self.block_bytes if self.lazy else need

    def drop(self, request_id: str) -> None:
        held = self.tier.pop(request_id, None)
        if held is not None:
            self.used_bytes -= self._bytes(held)

    def restore(self, request_id: str, num_tokens: int, first_block: int = 0) -> int | None:
        """Restores a resumed request's first `num_tokens` tokens but for its first `first_block`
        blocks (its prefix hit holds them); returns the bytes copied (None: the tier does not hold
        them, the step recomputes those past the hit)."""
        if self.tier.get(request_id, 0) < num_tokens:
            self.stats.num_failed_restores += 1
            self.stats.recomputed_tokens += num_tokens - first_block * self.block_size
            return None
        self.tier.move_to_end(request_id)
        nbytes = self._bytes(num_tokens) - first_block * self.block_bytes
        self.stats.num_restores += 1
        self.stats.bytes_restored += nbytes
        return nbytes

    def transfer_s(self, nbytes: int) -> float:
        """The device <-> host copy time of `nbytes` (counted in the stats)."""
        seconds = nbytes / self.link_bytes_per_s
        self.stats.transfer_s += seconds
        return seconds
