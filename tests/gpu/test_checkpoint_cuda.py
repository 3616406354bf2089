"""The worker's checkpoint copies on a CUDA device: blocks gathered from the GPU cache into the
store's host layout and scattered back into other GPU blocks are bit-exact (bf16 and fp16, the
dtypes GPU workers serve), and a CPU worker can restore what a GPU worker saved. Skipped without
CUDA."""

from __future__ import annotations

import pytest
import torch

from worker_svc.core.checkpoint import BlockFormat, read_blocks, write_blocks
from worker_svc.model.kv_cache import KvCache, KvCacheSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cache(device: str, dtype: torch.dtype, num_blocks: int = 64) -> KvCache:
    # Llama-3-8B-like geometry, trimmed in layers: 8 KV heads of 128, blocks of 16 tokens.
    return KvCache(KvCacheSpec(num_layers=4, num_kv_heads=8, head_dim=128, block_size=16, dtype=dtype), num_blocks, device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_blocks_round_trip_through_host_bytes(dtype: torch.dtype) -> None:
    src, dst = _cache("cuda", dtype), _cache("cuda", dtype)
    src.data.copy_(torch.randn(src.data.shape, device="cuda").to(dtype))
    ids, targets = [40, 3, 17, 63], [0, 9, 31, 2]
    blocks = read_blocks(src, ids)
    assert all(len(b) == BlockFormat.of(src).nbytes for b in blocks)
    write_blocks(dst, targets, blocks)
    torch.cuda.synchronize()
    for a, b in zip(ids, targets):
        assert torch.equal(src.data[:, :, a], dst.data[:, :, b])


def test_cpu_worker_restores_what_a_gpu_worker_saved() -> None:
    gpu, cpu = _cache("cuda", torch.bfloat16), _cache("cpu", torch.bfloat16)
    gpu.data.copy_(torch.randn(gpu.data.shape, device="cuda").to(torch.bfloat16))
    assert BlockFormat.of(gpu) == BlockFormat.of(cpu)
    write_blocks(cpu, [5, 6], read_blocks(gpu, [11, 12]))
    assert torch.equal(gpu.data[:, :, 11].cpu(), cpu.data[:, :, 5])
    assert torch.equal(gpu.data[:, :, 12].cpu(), cpu.data[:, :, 6])
