"""The host tier: checkpointed KV of preempted best-effort requests, in host memory.

A checkpoint is the KV blocks of one request by block index (0-based within its block table), all
of one dtype and shape, plus how many tokens they cover. Blocks arrive as chunks (a block larger
than a message comes in several, in order of offset) over one or several writes: lazy
checkpointing sends full blocks early while the request still runs and the tail block at
preemption, whose chunk sets `final`. Only a final (complete) checkpoint can be restored. A chunk
for a complete checkpoint reopens it (the request is checkpointed again, e.g. after resuming), and
a chunk at offset 0 for a block already held rewrites that block.

Capacity and eviction policy: bytes are reserved per block (`block_bytes`) on its first chunk.
When a new block does not fit, the tier evicts complete checkpoints, least recently written or
restored first, but only if that makes room; incomplete checkpoints (requests still running or
being preempted) are never evicted. If it cannot make room it refuses (`HostTierFullError`),
evicts nothing, and drops the refused request's checkpoint whole, so the scheduler falls back to
recomputing that request. An evicted request's Restore answers NOT_FOUND: it is recomputed too.
Complete checkpoints are favoured over partial ones because they hold a preempted request's whole
state, while early blocks of a running request are only useful if it is preempted later.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from kvstore_svc.core.dtypes import block_nbytes
from kvstore_svc.core.errors import CheckpointMismatchError, HostTierFullError, InvalidSpecError, UnknownCheckpointError


@dataclass(frozen=True, slots=True)
class KvChunk:
    """A slice of one KV block. Layout `[layers, 2, block_size, kv_heads, head_dim]`, row-major."""

    request_id: str
    block_index: int
    data: bytes
    offset: int  # of `data` within the block
    block_bytes: int  # the whole block
    dtype: str
    shape: tuple[int, ...]
    num_tokens: int = 0  # tokens the checkpoint covers, on the final chunk
    final: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointData:
    """A complete checkpoint, blocks in block-table order from `first_block` (a restorer that
    holds the blocks before it, its cached prefix, is not sent them)."""

    request_id: str
    dtype: str
    shape: tuple[int, ...]
    block_bytes: int
    num_tokens: int
    blocks: tuple[bytes, ...]
    first_block: int = 0


@dataclass(slots=True)
class _Block:
    data: bytearray | bytes  # bytes once full (immutable, so restores share it without copying)
    filled: int


@dataclass(slots=True)
class _Checkpoint:
    dtype: str
    shape: tuple[int, ...]
    block_bytes: int
    blocks: dict[int, _Block] = field(default_factory=dict)
    num_tokens: int = 0
    complete: bool = False


class HostTier:
    """Checkpoints by request id, within `capacity_bytes`."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise InvalidSpecError(f"host tier capacity must be positive, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.bytes_used = 0  # reserved: block_bytes per block held
        self._checkpoints: dict[str, _Checkpoint] = {}
        self._complete_lru: OrderedDict[str, None] = OrderedDict()  # oldest first
        # Counters since start (read by the metrics exporter).
        self.num_checkpoints_total = 0  # final chunks accepted
        self.bytes_stored_total = 0
        self.bytes_restored_total = 0
        self.num_restores = 0
        self.num_evictions = 0
        self.num_refusals = 0

    @property
    def num_checkpoints(self) -> int:
        """Checkpoints held, complete or not."""
        return len(self._checkpoints)

    def num_blocks(self, request_id: str) -> int:
        """Blocks held for a request (0 when none)."""
        checkpoint = self._checkpoints.get(request_id)
        return 0 if checkpoint is None else len(checkpoint.blocks)

    def is_complete(self, request_id: str) -> bool:
        """Whether a final checkpoint is held for the request."""
        checkpoint = self._checkpoints.get(request_id)
        return checkpoint is not None and checkpoint.complete

    def write(self, chunk: KvChunk) -> int:
        """Stores one chunk; returns the bytes of data stored.

        Raises `InvalidSpecError` for a chunk inconsistent with itself or with the checkpoint
        (dtype, shape, block size, offset out of order, a final chunk with blocks missing), and
        `HostTierFullError` when the block does not fit even after evicting (the request's
        checkpoint is then dropped whole).
        """
        checkpoint = self._checkpoints.get(chunk.request_id)
        self._validate(chunk, checkpoint)
        if chunk.data:
            block = checkpoint.blocks.get(chunk.block_index) if checkpoint is not None else None
            if block is None or chunk.offset == 0:
                if block is None:
                    self._reserve(chunk.block_bytes, chunk.request_id)
                block = _Block(bytearray(chunk.block_bytes), 0)
                if checkpoint is None:
                    checkpoint = _Checkpoint(chunk.dtype, chunk.shape, chunk.block_bytes)
                    self._checkpoints[chunk.request_id] = checkpoint
                checkpoint.blocks[chunk.block_index] = block
            assert checkpoint is not None and isinstance(block.data, bytearray)
            if checkpoint.complete:  # checkpointed again: not restorable until the next final chunk
                checkpoint.complete = False
                del self._complete_lru[chunk.request_id]
            end = chunk.offset + len(chunk.data)
            block.data[chunk.offset : end] = chunk.data
            block.filled = end
            if end == chunk.block_bytes:
                block.data = bytes(block.data)
            self.bytes_stored_total += len(chunk.data)
        if chunk.final:
            assert checkpoint is not None  # _validate refused a final chunk with nothing held
            self._finish(chunk, checkpoint)
        return len(chunk.data)

    def restore(self, request_id: str, expected_dtype: str = "", expected_shape: tuple[int, ...] = (),
                first_block: int = 0) -> CheckpointData:
        """The complete checkpoint of a request, blocks in order from `first_block` (the
        restorer's prefix-cache hit holds those before it; one at or past the checkpoint's end
        raises `InvalidSpecError`).

        `expected_dtype` / `expected_shape`, when given, are what the restoring worker's cache
        holds: a checkpoint of another dtype or shape raises `CheckpointMismatchError`.
        Raises `UnknownCheckpointError` when no complete checkpoint is held.
        """
        checkpoint = self._checkpoints.get(request_id)
        if checkpoint is None:
            raise UnknownCheckpointError(f"no checkpoint of request {request_id}: recompute it")
        if not checkpoint.complete:
            raise UnknownCheckpointError(
                f"checkpoint of request {request_id} is not complete ({len(checkpoint.blocks)} blocks, "
                "no final chunk yet): finish it or recompute"
            )
        if expected_dtype and expected_dtype != checkpoint.dtype:
            raise CheckpointMismatchError(
                f"checkpoint of request {request_id} holds {checkpoint.dtype}, the worker expects {expected_dtype}"
            )
        if expected_shape and tuple(expected_shape) != checkpoint.shape:
            raise CheckpointMismatchError(
                f"checkpoint of request {request_id} holds blocks of shape {list(checkpoint.shape)}, "
                f"the worker expects {list(expected_shape)}"
            )
        if not 0 <= first_block < len(checkpoint.blocks):
            raise InvalidSpecError(
                f"first_block_index {first_block} is not below the {len(checkpoint.blocks)} blocks of the checkpoint "
                f"of request {request_id}"
            )
        self._complete_lru.move_to_end(request_id)
        self.num_restores += 1
        blocks = tuple(bytes(checkpoint.blocks[index].data) for index in range(first_block, len(checkpoint.blocks)))
        self.bytes_restored_total += len(blocks) * checkpoint.block_bytes
        return CheckpointData(
            request_id, checkpoint.dtype, checkpoint.shape, checkpoint.block_bytes, checkpoint.num_tokens, blocks,
            first_block,
        )

    def drop(self, request_id: str) -> bool:
        """Forgets a request's checkpoint; False when none was held."""
        checkpoint = self._checkpoints.pop(request_id, None)
        if checkpoint is None:
            return False
        self._complete_lru.pop(request_id, None)
        self.bytes_used -= len(checkpoint.blocks) * checkpoint.block_bytes
        return True

    # --- helpers -----------------------------------------------------------------------------

    def _validate(self, chunk: KvChunk, checkpoint: _Checkpoint | None) -> None:
        where = f"chunk of request {chunk.request_id} block {chunk.block_index}"
        if not chunk.request_id:
            raise InvalidSpecError("chunk request_id is empty")
        if chunk.block_index < 0 or chunk.offset < 0:
            raise InvalidSpecError(f"{where}: block_index and offset must be >= 0")
        nbytes = block_nbytes(chunk.dtype, chunk.shape)
        if chunk.block_bytes != nbytes:
            raise InvalidSpecError(
                f"{where}: block_bytes {chunk.block_bytes} != {nbytes} (shape {list(chunk.shape)} in {chunk.dtype})"
            )
        if chunk.offset + len(chunk.data) > chunk.block_bytes:
            raise InvalidSpecError(
                f"{where}: offset {chunk.offset} + {len(chunk.data)} bytes runs past the block's {chunk.block_bytes}"
            )
        if checkpoint is not None and (checkpoint.dtype, checkpoint.shape) != (chunk.dtype, chunk.shape):
            raise InvalidSpecError(
                f"{where}: {chunk.dtype} {list(chunk.shape)} differs from the checkpoint's "
                f"{checkpoint.dtype} {list(checkpoint.shape)}"
            )
        if chunk.data and chunk.offset > 0:
            block = checkpoint.blocks.get(chunk.block_index) if checkpoint is not None else None
            filled = 0 if block is None else block.filled
            if chunk.offset != filled:
                raise InvalidSpecError(f"{where}: offset {chunk.offset}, expected {filled} (send a block's chunks in order)")
        if chunk.final and checkpoint is None and not chunk.data:
            raise InvalidSpecError(f"{where}: final chunk of a checkpoint that holds no blocks")

    def _finish(self, chunk: KvChunk, checkpoint: _Checkpoint) -> None:
        count = len(checkpoint.blocks)
        missing = [i for i in range(count) if i not in checkpoint.blocks]
        partial = [i for i, block in checkpoint.blocks.items() if block.filled < checkpoint.block_bytes]
        if missing or partial:
            raise InvalidSpecError(
                f"final chunk of request {chunk.request_id}: blocks {missing} missing and {sorted(partial)} "
                f"incomplete among blocks 0..{max(checkpoint.blocks)}"
            )
        checkpoint.complete = True
        checkpoint.num_tokens = chunk.num_tokens
        self._complete_lru[chunk.request_id] = None
        self.num_checkpoints_total += 1

    def _reserve(self, nbytes: int, request_id: str) -> None:
        """Makes room for `nbytes` by evicting LRU complete checkpoints, or refuses and evicts nothing."""
        overflow = self.bytes_used + nbytes - self.capacity_bytes
        if overflow <= 0:
            self.bytes_used += nbytes
            return
        victims: list[str] = []
        freed = 0
        for victim in self._complete_lru:
            if freed >= overflow:
                break
            if victim != request_id:
                victims.append(victim)
                freed += self._held_bytes(victim)
        if freed < overflow:
            own = self._held_bytes(request_id) if request_id in self._checkpoints else 0
            message = (
                f"host tier full: a block of {nbytes} bytes for request {request_id} does not fit "
                f"({self.bytes_used} of {self.capacity_bytes} bytes held, {own} by this request, "
                f"{freed} evictable): recompute the request"
            )
            self.num_refusals += 1
            self.drop(request_id)
            raise HostTierFullError(message)
        for victim in victims:
            self.drop(victim)
            self.num_evictions += 1
        self.bytes_used += nbytes

    def _held_bytes(self, request_id: str) -> int:
        checkpoint = self._checkpoints[request_id]
        return len(checkpoint.blocks) * checkpoint.block_bytes
