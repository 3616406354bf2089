"""The prefix cache index: which full blocks are cached, who references them, which go first.

    cached block ─┬─ refs > 0: part of a running request's KV; never evicted, never handed out
                  └─ refs = 0: kept for a later hit, on the LRU list; `evict` reclaims it

A prompt is matched block by block along its chain (`match`: the longest cached prefix);
`acquire` references that prefix for an owner (a request, or a lease); `insert` names a block the
owner has just computed; `release` drops every reference an owner holds (a finished request, or a
dead worker's leases one by one) and the blocks whose count falls to zero join the LRU list, the
chain's tail first so that a prefix outlives its extensions. The index owns no block ids: the
pool (`pool.py`, or the KV store's two-ended pool) hands them out and takes back what `evict` returns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from llmserve.prefix.block_hash import BlockHash

Owner = Hashable


@dataclass(slots=True)
class _Entry:
    block_id: int
    refs: int


class PrefixIndex:
    """Cached blocks by hash, with exact reference counts and an LRU of the unreferenced ones."""

    __slots__ = ("_entries", "_lru", "_held", "_block_ids")

    def __init__(self) -> None:
        self._entries: dict[BlockHash, _Entry] = {}
        self._lru: OrderedDict[BlockHash, None] = OrderedDict()  # refs == 0, least recently used first
        self._held: dict[Owner, list[BlockHash]] = {}  # owner -> hashes it references, chain order
        self._block_ids: set[int] = set()

    # ---- reading -----------------------------------------------------------------------------
    def match(self, chain: Sequence[BlockHash], max_blocks: int | None = None) -> int:
        """How many leading blocks of `chain` are cached (at most `max_blocks`)."""
        limit = len(chain) if max_blocks is None else min(max_blocks, len(chain))
        entries = self._entries
        n = 0
        while n < limit and chain[n] in entries:
            n += 1
        return n

    @property
    def num_cached(self) -> int:
        return len(self._entries)

    @property
    def num_reclaimable(self) -> int:
        """Cached blocks no one references: free space for either end of the pool."""
        return len(self._lru)

    @property
    def num_referenced(self) -> int:
        return len(self._entries) - len(self._lru)

    def refs(self, block_hash: BlockHash) -> int:
        entry = self._entries.get(block_hash)
        return entry.refs if entry is not None else 0

    def held(self, owner: Owner) -> tuple[BlockHash, ...]:
        return tuple(self._held.get(owner, ()))

    def is_cached_block(self, block_id: int) -> bool:
        return block_id in self._block_ids

    # ---- changing ----------------------------------------------------------------------------
    def acquire(self, owner: Owner, chain: Sequence[BlockHash], max_blocks: int | None = None) -> list[int]:
        """References the longest cached prefix of `chain` (at most `max_blocks`) for `owner`;
        returns its block ids in chain order. Blocks the owner holds already are not counted twice."""
        n = self.match(chain, max_blocks)
        mine = set(self._held.get(owner, ()))
        ids = []
        for block_hash in chain[:n]:
            entry = self._entries[block_hash]
            ids.append(entry.block_id)
            if block_hash in mine:
                continue
            if entry.refs == 0:
                del self._lru[block_hash]
            entry.refs += 1
            self._held.setdefault(owner, []).append(block_hash)
        return ids

    def insert(self, owner: Owner, block_hash: BlockHash, block_id: int) -> bool:
        """Names `block_id`, which `owner` has just computed, as `block_hash`, referenced by the
        owner. False when that hash is cached already (another request computed the same block
        meanwhile): the caller's block stays its own, uncached, and is freed as usual."""
        if block_hash in self._entries:
            return False
        if block_id in self._block_ids:
            raise ValueError(f"block {block_id} is cached already under another hash")
        self._entries[block_hash] = _Entry(block_id, 1)
        self._block_ids.add(block_id)
        self._held.setdefault(owner, []).append(block_hash)
        return True

    def release(self, owner: Owner) -> int:
        """Drops every reference `owner` holds; returns how many blocks became reclaimable."""
        hashes = self._held.pop(owner, None)
        if not hashes:
            return 0
        freed = 0
        for block_hash in reversed(hashes):  # the tail is evicted first: prefixes outlive extensions
            entry = self._entries[block_hash]
            entry.refs -= 1
            if entry.refs == 0:
                self._lru[block_hash] = None
                freed += 1
        return freed

    def release_owners(self, owners: Iterable[Owner]) -> int:
        """`release` of each owner (a dead worker's requests or leases)."""
        return sum(self.release(owner) for owner in list(owners))

    def evict(self, num_blocks: int) -> list[int]:
        """Forgets up to `num_blocks` unreferenced blocks, least recently used first; returns their
        ids for the pool to hand out again. A referenced block is never evicted."""
        return [block_id for _, block_id in self.evict_entries(num_blocks)]

    def evict_entries(self, num_blocks: int) -> list[tuple[BlockHash, int]]:
        """`evict`, naming each block forgotten by (hash, id) (a worker reports the hashes)."""
        out: list[tuple[BlockHash, int]] = []
        while len(out) < num_blocks and self._lru:
            block_hash, _ = self._lru.popitem(last=False)
            entry = self._entries.pop(block_hash)
            self._block_ids.discard(entry.block_id)
            out.append((block_hash, entry.block_id))
        return out

    def owners(self) -> tuple[Owner, ...]:
        return tuple(self._held)

    def check(self) -> None:
        """Raises AssertionError unless every count is exact (tests and the simulator call it)."""
        counts: dict[BlockHash, int] = {}
        for hashes in self._held.values():
            assert len(set(hashes)) == len(hashes), "an owner references a block twice"
            for block_hash in hashes:
                counts[block_hash] = counts.get(block_hash, 0) + 1
        for block_hash, entry in self._entries.items():
            assert entry.refs == counts.get(block_hash, 0), f"block {entry.block_id}: refs {entry.refs}"
            assert (entry.refs == 0) == (block_hash in self._lru), f"block {entry.block_id}: LRU membership"
        assert set(counts) <= set(self._entries), "an owner references an uncached block"
        assert len(self._block_ids) == len(self._entries) == len({e.block_id for e in self._entries.values()})
