"""KV checkpoints of the worker: copies between the paged device cache and host bytes, and which
blocks of each request the KV store's host tier already holds (bidirectional KV, issue 4).

Block bytes layout (the store's `KvChunk` contract): `[layers, 2, block_size, kv_heads, head_dim]`
in the cache dtype, row-major; the cache itself is `[layers, 2, num_blocks, block_size, kv_heads,
head_dim]`, so a block is a strided slice and one gather serves a batch of blocks.

What goes to the store, per request (`CheckpointTracker`):
- lazily, while a non-real-time request runs: every `lazy_blocks` newly full blocks (a full block
  never changes again), so that a preemption later costs only the tail;
- at preemption by checkpoint: the blocks not yet sent, up to its computed tokens, then `final`;
- when its state is dropped otherwise (recompute preemption, failed step, stream closed) after
  lazy writes: a data-less `final` over the full blocks sent, so the store never keeps an
  incomplete checkpoint (incomplete ones are never evicted); it is restorable for that prefix;
- when it finishes: a drop.
Snapshots are taken synchronously (before the blocks can be released and reused); the shell sends
them in the background, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from llmserve.plan import RestoreSpec
from llmserve.plan_book import RequestState
from llmserve.types import ServiceClass, cdiv
from worker_svc.model.kv_cache import KvCache


@dataclass(frozen=True)
class BlockFormat:
    """How one block looks in bytes; the store checks dtype and shape on restore."""

    dtype: str  # torch dtype name without "torch."
    shape: tuple[int, ...]  # [layers, 2, block_size, kv_heads, head_dim]
    nbytes: int

    @classmethod
    def of(cls, cache: KvCache) -> BlockFormat:
        spec = cache.spec
        return cls(str(spec.dtype).removeprefix("torch."),
                   (spec.num_layers, 2, spec.block_size, spec.num_kv_heads, spec.head_dim), spec.bytes_per_block)


@dataclass(frozen=True)
class CheckpointWrite:
    """Blocks `first_block_index ..` of a request to store; `final` completes the checkpoint,
    which then covers `num_tokens` tokens (a final write may carry no block)."""

    request_id: str
    first_block_index: int
    blocks: tuple[bytes, ...]
    num_tokens: int = 0
    final: bool = False

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.blocks)


@dataclass(frozen=True)
class RestoredKv:
    """A checkpoint fetched from the store: its blocks from `first_block` on (those before it are
    the request's cached prefix, not fetched)."""

    dtype: str
    shape: tuple[int, ...]
    num_tokens: int
    blocks: tuple[bytes, ...]
    first_block: int = 0


def read_blocks(cache: KvCache, block_ids: Sequence[int]) -> tuple[bytes, ...]:
    """The bytes of each block, in the store's layout (one gather and one host copy for all)."""
    if not block_ids:
        return ()
    data = cache.data  # [L, 2, N, bs, H, D]
    index = torch.tensor(list(block_ids), dtype=torch.long, device=data.device)
    # The gather straight into the store's layout (index_select's result is contiguous): one copy,
    # not a gather and then a permuted copy.
    blocks = data.permute(2, 0, 1, 3, 4, 5).index_select(0, index).contiguous().cpu()  # [n, L, 2, bs, H, D]
    raw = blocks.view(torch.uint8).reshape(len(block_ids), -1).numpy()
    return tuple(raw[i].tobytes() for i in range(len(block_ids)))


def write_blocks(cache: KvCache, block_ids: Sequence[int], blocks: Sequence[bytes]) -> None:
    """Copies host bytes (store layout) into the given cache blocks."""
    if not block_ids:
        return
    spec = cache.spec
    n = len(block_ids)
    buffer = bytearray(b"".join(blocks[:n]))
    host = torch.frombuffer(buffer, dtype=torch.uint8).view(spec.dtype).reshape(
        n, spec.num_layers, 2, spec.block_size, spec.num_kv_heads, spec.head_dim)  # [n, L, 2, bs, H, D]
    index = torch.tensor(list(block_ids), dtype=torch.long, device=cache.data.device)
    cache.data.index_copy_(2, index, host.permute(1, 2, 0, 3, 4, 5).to(cache.data.device))


class CheckpointTracker:
    """Per request: how many leading blocks the store holds (sent or queued), and whether it may
    hold anything at all (then a finish drops it). `lazy_blocks` (fixed at construction) 0 turns
    lazy writes off.

    Only requests in the worker's plan book have an entry: a request whose state goes (preempted,
    dropped with a failed step or a closed stream) is forgotten, because the worker is not told
    when it ends if it ends elsewhere (issue 11: an entry per request moved away, for good). What
    the store keeps of it is either known to the scheduler's checkpoint book (a checkpoint
    preemption: it sends the drop when the request leaves, to whichever worker) or a complete lazy
    checkpoint, which the store evicts when it needs the room; a request that comes back writes
    or restores again and so is known again."""

    def __init__(self, cache: KvCache, lazy_blocks: int) -> None:
        if lazy_blocks < 0:
            raise ValueError(f"lazy_blocks must be >= 0, got {lazy_blocks}")
        self.cache = cache
        self.format = BlockFormat.of(cache)
        self.block_size = cache.spec.block_size
        self._lazy_blocks = lazy_blocks
        self._saved: dict[str, int] = {}  # leading blocks held by the store
        self._known: set[str] = set()  # may hold a checkpoint in the store
        self._open: set[str] = set()  # lazy writes since the last final: incomplete in the store

    @property
    def lazy_blocks(self) -> int:
        return self._lazy_blocks

    def saved_blocks(self, request_id: str) -> int:
        return self._saved.get(request_id, 0)

    def preempt(self, state: RequestState) -> CheckpointWrite | None:
        """The final write of a request preempted by checkpoint (None when it computed nothing)."""
        tokens = state.num_computed
        if tokens <= 0:
            return None
        end = cdiv(tokens, self.block_size)
        first = min(self._saved.pop(state.request_id, 0), end)
        self._known.discard(state.request_id)  # the scheduler's book has it now (see the class)
        self._open.discard(state.request_id)
        return CheckpointWrite(state.request_id, first, read_blocks(self.cache, state.block_table[first:end]),
                               num_tokens=tokens, final=True)

    def drop_state(self, request_id: str) -> CheckpointWrite | None:
        """The request's state goes without a checkpoint: completes what lazy writes sent."""
        saved = self._saved.pop(request_id, 0)
        self._known.discard(request_id)
        if request_id not in self._open:
            return None  # nothing sent, or complete already (e.g. the restored checkpoint)
        self._open.discard(request_id)
        return CheckpointWrite(request_id, saved, (), num_tokens=saved * self.block_size, final=True)

    def finish(self, request_id: str) -> bool:
        """The request is done: True if the store may hold a checkpoint of it (drop it)."""
        self._saved.pop(request_id, None)
        self._open.discard(request_id)
        if request_id in self._known:
            self._known.discard(request_id)
            return True
        return False

    def forget_store(self) -> list[str]:
        """The store restarted: it holds nothing it had of ours. Forgets what was sent and returns
        every request it may hold a checkpoint of (writes may have reached the new store since):
        drop those, so a later write starts again from block 0."""
        known = sorted(self._known | set(self._saved) | self._open)
        self._saved.clear()
        self._open.clear()
        self._known.clear()
        return known

    def restored(self, request_id: str, num_tokens: int) -> None:
        """The request resumed from a checkpoint: its full blocks are in the store already."""
        self._saved[request_id] = num_tokens // self.block_size
        self._known.add(request_id)

    def lazy(self, states: Iterable[RequestState]) -> list[CheckpointWrite]:
        """Writes of newly full blocks of running non-real-time requests, `lazy_blocks` at a time."""
        lazy_blocks = self._lazy_blocks
        if not lazy_blocks:
            return []
        due: list[tuple[str, int, list[int]]] = []  # request, first block index, block ids
        for state in states:
            if state.service_class is ServiceClass.REAL_TIME:
                continue
            full = state.num_computed // self.block_size
            first = self._saved.get(state.request_id, 0)
            if full - first >= lazy_blocks:
                due.append((state.request_id, first, state.block_table[first:full]))
                self._saved[state.request_id] = full
                self._known.add(state.request_id)
                self._open.add(state.request_id)
        # One gather for the step's writes (a request's blocks are its slice of them).
        blocks = read_blocks(self.cache, [b for _, _, ids in due for b in ids])
        writes, at = [], 0
        for request_id, first, ids in due:
            writes.append(CheckpointWrite(request_id, first, blocks[at:at + len(ids)]))
            at += len(ids)
        return writes

    def apply_restore(self, state: RequestState, spec: RestoreSpec, data: RestoredKv | None) -> bool:
        """Copies a fetched checkpoint into the request's blocks `spec.first_block ..` (the ones
        before are its prefix hit, shared with the cache, never written); the plan book then counts
        those tokens computed. False (nothing copied) when it is missing, of another format, or
        too short: the step then recomputes those tokens."""
        if data is None:
            return False
        fmt = self.format
        first, need = spec.first_block, cdiv(spec.num_tokens, self.block_size)
        # Blocks first..need of the request, as indices into what was fetched (from data.first_block).
        wanted = data.blocks[first - data.first_block:need - data.first_block]
        if (data.dtype != fmt.dtype or tuple(data.shape) != fmt.shape or first < data.first_block
                or data.num_tokens < spec.num_tokens or len(wanted) < need - first
                or any(len(b) != fmt.nbytes for b in wanted) or len(state.block_table) < need):
            return False
        write_blocks(self.cache, state.block_table[first:need], wanted)
        self.restored(state.request_id, spec.num_tokens)
        return True
