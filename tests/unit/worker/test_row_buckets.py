"""The row buckets of the prepacked linears (worker_svc/model/row_buckets.py): the padding stays
within its cost bound, a padded step computes what the unpadded one does and writes only its own
tokens' KV, and after the warm-up no step shape builds a new oneDNN primitive (issue 11: each one
is resident memory for good)."""

from __future__ import annotations

import random

import pytest
import torch

from llmserve.model_source import resolve_model
from tests.unit.worker.helpers import PagedSeq, paged_cache, paged_forward
from worker_svc.kernels.backend import make_backend
from worker_svc.model.linear import prepack_supported
from worker_svc.model.loader import load_model
from worker_svc.model.row_buckets import MAX_PAD_COST, WEIGHT_READ_ROWS, RowBuckets, bucket_sizes

needs_prepack = pytest.mark.skipif(not prepack_supported(torch.bfloat16, "cpu"),
                                   reason="this torch has no oneDNN bfloat16 linear")


@pytest.mark.parametrize("max_rows", [1, 7, 512, 2048])
def test_every_row_count_pads_to_a_bucket_within_the_cost_bound(max_rows: int) -> None:
    buckets = RowBuckets.up_to(max_rows)
    assert list(buckets.sizes) == sorted(set(buckets.sizes)) and buckets.sizes[-1] == max_rows
    for rows in range(1, max_rows + 1):
        padded = buckets.rows_for(rows)
        assert padded in buckets.sizes and padded >= rows
        assert padded - rows <= MAX_PAD_COST * (WEIGHT_READ_ROWS + rows)
    assert buckets.rows_for(0) == 0 and buckets.rows_for(max_rows + 1) == max_rows + 1


def test_the_worker_default_budget_has_52_buckets() -> None:
    # The number docs/reliability.md and row_buckets.py state (each costs ~3.5 MB of primitives).
    assert len(bucket_sizes(512)) == 52


def _bf16_model(folder):
    return load_model(resolve_model(str(folder)), make_backend("torch"), torch.bfloat16)


def _mixed_step(model, kv, free, seed: int) -> torch.Tensor:
    """Three decodes (after their prefills) and a 19-token prefill chunk: 22 rows, padded to 24."""
    rng = random.Random(seed)
    seqs = [PagedSeq([rng.randrange(96) for _ in range(n)], free) for n in (9, 14, 5, 19)]
    paged_forward(model, kv, seqs[:3], [8, 13, 4])
    return paged_forward(model, kv, seqs, [1, 1, 1, 19])


@needs_prepack
def test_a_padded_step_computes_what_the_unpadded_one_does_and_writes_only_its_tokens(tiny_checkpoints) -> None:
    folder, _ = tiny_checkpoints["llama"]
    plain, padded = _bf16_model(folder), _bf16_model(folder)
    padded.bucket_rows(512)
    assert plain.row_buckets is None and padded.row_buckets is not None and padded.row_buckets.rows_for(22) == 24
    (kv_a, free_a), (kv_b, free_b) = paged_cache(plain), paged_cache(padded)
    expected, got = _mixed_step(plain, kv_a, free_a, 0), _mixed_step(padded, kv_b, free_b, 0)
    assert got.shape == expected.shape
    # bfloat16: oneDNN may block the rows differently at another row count
    torch.testing.assert_close(got, expected, atol=0.05 * float(expected.abs().max()), rtol=0)
    written_a, written_b = kv_a.data.flatten(-2).abs().sum(-1) > 0, kv_b.data.flatten(-2).abs().sum(-1) > 0
    assert torch.equal(written_a, written_b)  # the same slots, and no padding row's KV anywhere


@needs_prepack
def test_float32_models_are_not_padded(tiny_checkpoints) -> None:
    model = load_model(resolve_model(str(tiny_checkpoints["llama"][0])), make_backend("torch"))
    model.bucket_rows(512)
    assert model.row_buckets is None


@needs_prepack
def test_after_the_warm_up_no_step_shape_builds_a_primitive(tiny_checkpoints, capfd) -> None:
    model = _bf16_model(tiny_checkpoints["llama"][0])
    model.bucket_rows(64)
    model.warm_row_buckets(max_head_rows=64)
    kv, free = paged_cache(model, num_blocks=256)
    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
        for prefill in (2, 5, 17, 33, 60):
            seqs = [PagedSeq(list(range(prefill)), free)]
            paged_forward(model, kv, seqs, [prefill])  # logits for every row: up to 60 head rows
        decoding = [PagedSeq(list(range(12)), free) for _ in range(5)]
        paged_forward(model, kv, decoding, [7] * 5)
        for batch in (1, 3, 5):  # decodes, then decodes beside a prefill chunk
            paged_forward(model, kv, decoding[:batch], [1] * batch)
            paged_forward(model, kv, [*decoding[:batch], PagedSeq(list(range(11)), free)], [1] * batch + [11])
    created = [line for line in capfd.readouterr().out.splitlines() if "create:cache_miss" in line]
    assert created == []
