"""The prefix cache's second tier: cached blocks the device pool evicted, kept in host memory.

    device pool ──evict (unreferenced, LRU)──▶ host tier ──LRU, bounded──▶ gone
         ▲                                        │
         └──── promote: copied into fresh ◀───────┘  (a later prompt hits it)
               device blocks of the request

A block is in at most one tier: a promotion takes it out of the host tier (the device copy is
named again under the same hash when the step has run), a demotion puts it in. Keyed by the same
hash chain as the device index (tenant salt included), so a host block is found exactly where a
device block would be: after the prompt's device hits, along the same chain. The payload is the
block's KV (a host tensor on a live worker, nothing in the simulator): a hash names the tokens of
the whole prefix, so a payload copied before its device block was reused holds that KV for as
long as it stays here. Pure; the worker's cache (llmserve/plan_book/prefix_cache.py) drives it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llmserve.prefix.block_hash import BlockHash

_MISSING = object()


@dataclass(slots=True)
class HostTierCounts:
    demoted: int = 0  # blocks put in
    promoted: int = 0  # blocks taken out for a hit
    dropped: int = 0  # blocks the LRU pushed out (or refused: capacity 0)


class HostPrefixTier:
    """At most `capacity_blocks` blocks by hash, least recently demoted first out."""

    __slots__ = ("capacity_blocks", "counts", "_blocks")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must be >= 0, got {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        self.counts = HostTierCounts()
        self._blocks: OrderedDict[BlockHash, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def hashes(self) -> Iterator[BlockHash]:
        return iter(self._blocks)

    def match(self, chain: Sequence[BlockHash], start: int, limit: int) -> int:
        """How many blocks of `chain` from `start` (at most `limit`) the tier holds, in a row."""
        blocks = self._blocks
        n = 0
        end = min(len(chain), start + max(0, limit))
        while start + n < end and chain[start + n] in blocks:
            n += 1
        return n

    def put(self, block_hash: BlockHash, payload: Any) -> list[BlockHash]:
        """Keeps `payload` under `block_hash` (the most recent); returns the hashes dropped to make
        room (LRU first; the block itself when the capacity is 0)."""
        if self.capacity_blocks == 0:
            self.counts.dropped += 1
            return [block_hash]
        blocks = self._blocks
        if block_hash in blocks:  # cannot happen while a block is in one tier at a time; keep the newest
            blocks.move_to_end(block_hash)
        blocks[block_hash] = payload
        self.counts.demoted += 1
        dropped = []
        while len(blocks) > self.capacity_blocks:
            dropped.append(blocks.popitem(last=False)[0])
        self.counts.dropped += len(dropped)
        return dropped

    def set_payload(self, block_hash: BlockHash, payload: Any) -> bool:
        """Fills in the payload of a block put in before its copy was made; False if it is gone."""
        if block_hash not in self._blocks:
            return False
        self._blocks[block_hash] = payload
        return True

    def take(self, hashes: Sequence[BlockHash]) -> list[Any]:
        """Takes the blocks out for a promotion (each must be here); returns their payloads."""
        blocks = self._blocks
        out = [blocks.pop(h) for h in hashes]
        self.counts.promoted += len(out)
        return out

    def discard(self, block_hash: BlockHash) -> bool:
        """Forgets a block the device holds again (computed anew); False if it was not here."""
        if self._blocks.pop(block_hash, _MISSING) is _MISSING:
            return False
        self.counts.dropped += 1
        return True

    def clear(self) -> list[BlockHash]:
        """Forgets everything; returns the hashes dropped."""
        gone = list(self._blocks)
        self._blocks.clear()
        self.counts.dropped += len(gone)
        return gone
