"""The scheduler's book of KV checkpoints in the KV store's host tier (bidirectional KV, issue 4).

When a policy preempts a victim with `PreemptionMode.CHECKPOINT`, the plan lists it in
`checkpoint_request_ids`: the worker copies the KV of its `num_computed_tokens` tokens to the host
tier before dropping it. The book remembers that count; when the request is admitted again (on
the same worker or, after an eviction, on another one: the host tier is shared, so one book serves
every worker's core), it resumes from there (`NewRequestData.num_computed_tokens`) instead of
recomputing its prefix.

The book is a hint, never a source of truth for correctness: the store may evict or refuse a
checkpoint at any time, or die with its host tier (`on_tier_lost`), and the worker then
recomputes the prefix inside the step (`StepResult.restore_failed_request_ids`), so a stale
entry costs time, not tokens. Reports of
refused checkpoints (`checkpoint_failed_request_ids`) and failed restores invalidate entries so
that the next admission recomputes directly.

A checkpoint stays valid while its request runs on: the KV of a prefix depends only on its tokens.
So a resumed request keeps its entry (if its worker dies, another one restores the prefix and
recomputes only the rest) until it leaves the system; then the core lists its id in the next
plan's `drop_checkpoint_request_ids` so the worker frees the host memory. A request resubmitted
after a scheduler restart may have a checkpoint that no book knows (`on_resubmitted`): it gets the
same drop when it leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.types import cdiv


@dataclass(slots=True)
class CheckpointStats:
    """Counters since start (read by the service's metrics and by benchmarks)."""

    num_checkpoints: int = 0  # preemptions by checkpoint
    checkpointed_tokens: int = 0  # tokens covered by those checkpoints
    num_restores: int = 0  # admissions that resume from a checkpoint
    restored_tokens: int = 0  # tokens not recomputed thanks to them
    num_recompute_preemptions: int = 0  # preemptions that drop KV (recompute mode or failed steps)
    recomputed_tokens: int = 0  # computed tokens lost and computed again (preemptions, failed restores)
    num_failed_checkpoints: int = 0  # refused or lost by the store, reported by workers
    num_failed_restores: int = 0  # restores the worker could not do (it recomputed instead)
    num_lost_checkpoints: int = 0  # entries dropped because the KV store restarted (its tier empty)


class CheckpointBook:
    """Restorable token counts by request id, shared by the cores of one scheduler service."""

    __slots__ = ("_tokens", "_unknown", "stats", "_block_size", "_capacity_blocks", "_blocks_held")

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}
        # The host tier's size, once known (`set_capacity`), and the blocks this book's entries
        # take in it: what `fits` answers from. The store may have evicted an entry the book
        # still counts, so the count errs on the full side.
        self._block_size = 0
        self._capacity_blocks = 0
        self._blocks_held = 0
        # Requests that may have a checkpoint this book never saw (written before a scheduler
        # restart): nothing to resume from, but a drop to list when they leave.
        self._unknown: set[str] = set()
        self.stats = CheckpointStats()

    def __len__(self) -> int:
        return len(self._tokens) + len(self._unknown.difference(self._tokens))

    def set_capacity(self, capacity_bytes: int, bytes_per_block: int, block_size: int) -> None:
        """The host tier holds `capacity_bytes`, in blocks of `block_size` tokens of
        `bytes_per_block` bytes each (the workers' KV geometry)."""
        if capacity_bytes < 0 or bytes_per_block < 1 or block_size < 1:
            raise ValueError("capacity_bytes >= 0, bytes_per_block >= 1 and block_size >= 1")
        self._block_size = block_size
        self._capacity_blocks = capacity_bytes // bytes_per_block
        self._blocks_held = sum(cdiv(t, block_size) for t in self._tokens.values())

    def fits(self, num_tokens: int) -> bool:
        """Whether a checkpoint of `num_tokens` more tokens would fit the host tier beside those
        the book holds, without evicting one (False while the tier's size is unknown)."""
        size = self._block_size
        return bool(size) and self._blocks_held + cdiv(num_tokens, size) <= self._capacity_blocks

    def _set(self, request_id: str, num_tokens: int) -> None:
        old = self._tokens.get(request_id, 0)
        self._tokens[request_id] = num_tokens
        if self._block_size:
            self._blocks_held += cdiv(num_tokens, self._block_size) - cdiv(old, self._block_size)

    def _pop(self, request_id: str) -> int | None:
        tokens = self._tokens.pop(request_id, None)
        if tokens is not None and self._block_size:
            self._blocks_held -= cdiv(tokens, self._block_size)
        return tokens

    def tokens(self, request_id: str) -> int:
        """Tokens whose KV the request's checkpoint should hold (0: none, recompute)."""
        return self._tokens.get(request_id, 0)

    def resume_point(self, request_id: str, num_known_tokens: int) -> int:
        """Where an admission resumes: the checkpointed tokens, at most `num_known_tokens - 1`
        (the last known token must be computed for the step to sample)."""
        tokens = self._tokens.get(request_id, 0)
        return min(tokens, num_known_tokens - 1) if tokens > 0 else 0

    # ---- events from the core --------------------------------------------------------------
    def on_checkpoint(self, request_id: str, num_computed_tokens: int) -> None:
        """The request is preempted by checkpoint with this many tokens computed."""
        self._set(request_id, num_computed_tokens)
        self.stats.num_checkpoints += 1
        self.stats.checkpointed_tokens += num_computed_tokens

    def on_recompute(self, request_id: str, num_computed_tokens: int) -> None:
        """The request lost its device KV without a new checkpoint. Tokens beyond its older
        checkpoint (if any) will be recomputed."""
        self.stats.num_recompute_preemptions += 1
        self.stats.recomputed_tokens += max(0, num_computed_tokens - self._tokens.get(request_id, 0))

    def on_restore(self, request_id: str, num_tokens: int) -> None:
        """An admission resumes from `num_tokens` restored tokens."""
        self.stats.num_restores += 1
        self.stats.restored_tokens += num_tokens

    def on_resubmitted(self, request_id: str) -> None:
        """The request came back with known outputs after a scheduler restart: the store may hold
        a checkpoint of it from before (its worker completed the lazy writes when the old
        scheduler's stream closed) that no book knows. Its size is unknown, so nothing resumes
        from it; `forget` reports it so that the host memory is freed when the request leaves."""
        self._unknown.add(request_id)

    def on_checkpoint_failed(self, request_id: str) -> None:
        """The store refused or lost the checkpoint: the next admission recomputes."""
        if self._pop(request_id) is not None:
            self.stats.num_failed_checkpoints += 1

    def on_restore_failed(self, request_id: str, num_tokens: int) -> None:
        """The worker could not restore and recomputed `num_tokens` tokens instead."""
        self._pop(request_id)
        self.stats.num_failed_restores += 1
        self.stats.restored_tokens -= num_tokens
        self.stats.recomputed_tokens += num_tokens

    def on_tier_lost(self) -> int:
        """The KV store restarted: its host tier, and every checkpoint in it, is gone. Forgets them
        all (the next admissions recompute directly, no restore is tried); returns how many. A
        checkpoint written to the new store meanwhile is forgotten too: it costs a recompute, and
        the worker that wrote it drops it when the request finishes there (or the tier evicts it)."""
        lost = len(self._tokens)
        self._tokens.clear()
        self._blocks_held = 0
        self.stats.num_lost_checkpoints += lost
        return lost

    def forget(self, request_id: str) -> bool:
        """The request left the system (finished, aborted). True if it held a checkpoint, which
        the caller then asks its worker to drop (the worker that wrote it, so the drop follows
        the writes in that worker's order)."""
        unknown = request_id in self._unknown
        self._unknown.discard(request_id)
        return self._pop(request_id) is not None or unknown
