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

    @property
    def num_seqs(self) -> int:
        return int(self.context_lens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.slot_mapping.shape[0])
