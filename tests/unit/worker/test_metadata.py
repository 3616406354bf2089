"""build_metadata against a per-token reference: positions, cache slots across block boundaries,
padded block tables, and the per-sequence counts."""

from __future__ import annotations

import random

import torch

from worker_svc.model.metadata import build_metadata


def _reference(query_lens, num_computed, tables, block_size):  # type: ignore[no-untyped-def]
    positions = [p for q, c in zip(query_lens, num_computed) for p in range(c, c + q)]
    owners = [b for b, q in enumerate(query_lens) for _ in range(q)]
    slots = [tables[b][p // block_size] * block_size + p % block_size for b, p in zip(owners, positions)]
    return positions, slots


def test_metadata_matches_the_per_token_reference() -> None:
    rng = random.Random(7)
    for _ in range(300):
        block_size = rng.choice([1, 4, 16])
        query_lens = [1] * rng.randint(0, 5) + [rng.randint(2, 40) for _ in range(rng.randint(0, 3))]
        computed = [rng.randint(0, 70) for _ in query_lens]
        tables = [[rng.randint(0, 500) for _ in range(-(-(q + c) // block_size) + rng.randint(0, 2))]
                  for q, c in zip(query_lens, computed)]
        meta, positions = build_metadata(query_lens, computed, tables, block_size)
        want_positions, want_slots = _reference(query_lens, computed, tables, block_size)
        assert positions.dtype == meta.slot_mapping.dtype == torch.int64
        assert positions.tolist() == want_positions and meta.slot_mapping.tolist() == want_slots
        width = max([len(t) for t in tables] + [1])
        assert meta.block_tables.dtype == torch.int32
        assert meta.block_tables.tolist() == [t + [0] * (width - len(t)) for t in tables]
        assert meta.context_lens.tolist() == [q + c for q, c in zip(query_lens, computed)]
        assert meta.num_decodes == query_lens.count(1)


def test_an_empty_batch() -> None:
    meta, positions = build_metadata([], [], [], 16)
    assert tuple(meta.block_tables.shape) == (0, 1) and positions.numel() == 0 and meta.num_seqs == 0
