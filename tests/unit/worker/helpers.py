"""Helpers for the worker tests (imported by tests/integration too): tiny random Hugging Face checkpoints and an in-memory block pool
that answers a step's KvDelta like the KV store would (shuffled ids, so block tables are not
contiguous)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from llmserve.plan import BatchPlan, Grant, KvDelta, StepResult
from llmserve.types import cdiv
from worker_svc.core.runner import RunnerLimits, StepRunner
from worker_svc.model.kv_cache import KvCache, KvCacheSpec
from worker_svc.model.llama import LlamaModel
from worker_svc.model.metadata import build_metadata

TINY = dict(
    vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
)


def save_tiny_checkpoint(kind: str, folder: Path, seed: int = 0) -> torch.nn.Module:
    """A tiny random Llama or Qwen2 saved as safetensors; every parameter (biases and norms too)
    is random so that a mis-mapped tensor cannot hide. Returns the HF model (the reference)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**TINY, rope_theta=500.0))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**TINY, rope_theta=800.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(1.0 + 0.1 * torch.randn_like(param) if "norm" in name else 0.15 * torch.randn_like(param))
    model.eval()
    model.save_pretrained(folder)
    return model


class LocalBlockPool:
    """Grants block ids from a shuffled free list and takes them back on release."""

    def __init__(self, num_blocks: int, seed: int = 0) -> None:
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)
        self.owned: dict[str, list[int]] = {}

    def apply(self, delta: KvDelta) -> list[Grant]:
        for request_id in delta.release_request_ids:
            self.free.extend(self.owned.pop(request_id, []))
        need = sum(lease.num_blocks for lease in delta.leases)
        if need > len(self.free):
            raise RuntimeError(f"out of blocks: need {need}, {len(self.free)} free")
        grants = []
        for lease in delta.leases:
            ids = [self.free.pop() for _ in range(lease.num_blocks)]
            self.owned.setdefault(lease.request_id, []).extend(ids)
            grants.append(Grant(lease.request_id, tuple(ids)))
        return grants

    @property
    def num_used(self) -> int:
        return sum(len(ids) for ids in self.owned.values())


def hf_greedy(hf: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    """The `n` tokens greedy decoding appends to `prompt` with a transformers model: the reference
    the services' outputs are compared with."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def make_runner(model: LlamaModel, num_blocks: int = 64, block_size: int = 4, max_tokens: int = 512,
                max_seqs: int = 64) -> StepRunner:
    spec = KvCacheSpec.for_model(model.config, block_size, model.embed_tokens.weight.dtype)
    return StepRunner(model, KvCache(spec, num_blocks, "cpu"), RunnerLimits(max_tokens, max_seqs))


def run_step(runner: StepRunner, pool: LocalBlockPool, plan: BatchPlan) -> StepResult:
    return runner.finish_step(pool.apply(runner.begin_step(plan)))


PAGED_BLOCK = 4  # small blocks: chunks and contexts cross block boundaries often


class PagedSeq:
    """One sequence's blocks in a test cache (shuffled, so not contiguous)."""

    def __init__(self, ids: list[int], free: list[int]) -> None:
        self.ids = ids
        self.computed = 0
        self.table = [free.pop() for _ in range(cdiv(len(ids), PAGED_BLOCK) + 1)]


def paged_forward(model: LlamaModel, kv: KvCache, seqs: list[PagedSeq], chunk_lens: list[int]) -> torch.Tensor:
    """One forward over the given chunks (decodes first), logits for every row."""
    meta, positions = build_metadata(chunk_lens, [s.computed for s in seqs], [s.table for s in seqs], PAGED_BLOCK)
    input_ids = torch.tensor([t for s, n in zip(seqs, chunk_lens) for t in s.ids[s.computed : s.computed + n]])
    logits = model(input_ids, positions, meta, kv, torch.arange(len(input_ids)))
    for s, n in zip(seqs, chunk_lens):
        s.computed += n
    return logits


def paged_cache(model: LlamaModel, num_blocks: int = 64) -> tuple[KvCache, list[int]]:
    """A cache in the model's dtype, and its free block ids (shuffled)."""
    free = list(range(num_blocks))
    random.Random(0).shuffle(free)
    dtype = model.embed_tokens.weight.dtype
    return KvCache(KvCacheSpec.for_model(model.config, PAGED_BLOCK, dtype), num_blocks, "cpu"), free
