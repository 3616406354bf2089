"""Per-step attention metadata, passed explicitly through the forward pass (no global context)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionMetadata:
    """Where each token of a flattened mixed batch reads and writes KV.

    The batch holds B sequences; sequence b contributes the query tokens
    `query_start_loc[b]:query_start_loc[b+1]` of the flattened batch. Sequences with one query token
    (decodes) come first: the first `num_decodes` sequences have query length 1.
    All tensors live on the model's device.
    """

    slot_mapping: torch.Tensor  # [T] int64: cache slot each token's K/V is written to; -1 skips
    block_tables: torch.Tensor  # [B, max_blocks] int32: block ids per sequence, padded with 0
    query_start_loc: torch.Tensor  # [B+1] int32: prefix sums of query lengths
    context_lens: torch.Tensor  # [B] int32: KV tokens of each sequence after this step
    num_computed: torch.Tensor  # [B] int32: KV tokens of each sequence before this step
    max_query_len: int
    max_context_len: int
    num_decodes: int  # leading sequences with exactly one query token
    # Host copies of the per-sequence counts, so backends plan without device syncs.
    query_start_host: tuple[int, ...]  # [B+1]
    context_lens_host: tuple[int, ...]  # [B]
    num_computed_host: tuple[int, ...]  # [B]

    @property
    def num_seqs(self) -> int:
        return int(self.context_lens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.slot_mapping.shape[0])


def build_metadata(
    query_lens: list[int],
    num_computed: list[int],
    block_tables: list[list[int]],
    block_size: int,
    device: torch.device | str = "cpu",
) -> tuple[AttentionMetadata, torch.Tensor]:
    """Metadata for sequences given in batch order (decodes, i.e. query length 1, first), and the
    positions [T] of the flattened tokens. Each block table must cover `num_computed + query_len`
    tokens."""
    num_seqs = len(query_lens)
    assert len(num_computed) == num_seqs == len(block_tables), "one entry per sequence"
    num_decodes = 0
    while num_decodes < num_seqs and query_lens[num_decodes] == 1:
        num_decodes += 1
    assert all(q > 1 for q in query_lens[num_decodes:]), "decodes (query length 1) must come first"
    context_lens = [c + q for c, q in zip(num_computed, query_lens)]
    for b, table in enumerate(block_tables):
        assert len(table) * block_size >= context_lens[b], f"sequence {b}: block table too short"
    # Built as Python lists and turned into tensors once each: a step's inputs are a few hundred
    # small numbers, for which each torch op costs more than the arithmetic (issue 10: 0.35 ms of
    # torch calls per 32-decode step before).
    width = max(max((len(t) for t in block_tables), default=0), 1)
    tables = torch.tensor([[*t, *([0] * (width - len(t)))] for t in block_tables] or [[0]],
                          dtype=torch.int32)[:num_seqs]  # [B, max_blocks]
    starts = [0]
    positions: list[int] = []
    slots: list[int] = []
    for q, c, table in zip(query_lens, num_computed, block_tables):
        starts.append(starts[-1] + q)
        positions.extend(range(c, c + q))
        _extend_slots(slots, table, c, c + q, block_size)
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        block_tables=tables.to(device),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        context_lens=torch.tensor(context_lens, dtype=torch.int32, device=device),
        num_computed=torch.tensor(num_computed, dtype=torch.int32, device=device),
        max_query_len=max(query_lens, default=0),
        max_context_len=max(context_lens, default=0),
        num_decodes=num_decodes,
        query_start_host=tuple(starts),
        context_lens_host=tuple(context_lens),
        num_computed_host=tuple(num_computed),
    )
    return meta, torch.tensor(positions, dtype=torch.int64, device=device)


def _extend_slots(slots: list[int], table: list[int], first: int, end: int, block_size: int) -> None:
    """Appends the cache slots of positions `first:end` of a sequence with block table `table`,
    one range per block spanned."""
    pos = first
    while pos < end:
        block, offset = divmod(pos, block_size)
        run = min(end - pos, block_size - offset)
        base = table[block] * block_size + offset
        slots.extend(range(base, base + run))
        pos += run
